"""Pure graph logic (shared.logic.readiness.dag): cycles, rung A cycle breaking, linear order, ranks, shared targets.

Edges point from a dependency to its dependent; `deps` maps a task to the tasks it depends on.
"""

from __future__ import annotations

import itertools

import networkx as nx
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.logic.readiness import dag


def _follows_dependencies(cycle: list[str], deps: dict[str, list[str]]) -> bool:
    """Each step u → v of a described cycle is a real edge: v depends on u."""
    return cycle[0] == cycle[-1] and all(u in deps[v] for u, v in itertools.pairwise(cycle))


def test_two_task_cycle_is_found_and_described_with_arrows():
    deps = {"a": ["b"], "b": ["a"]}
    cycles = dag.find_cycles(deps)
    assert len(cycles) == 1
    assert dag.describe_cycle(cycles[0]) in ("a → b → a", "b → a → b")
    assert _follows_dependencies(cycles[0], deps)
    assert not dag.is_acyclic(deps)


def test_cycle_members_exclude_tasks_merely_hanging_off_it():
    deps = {"a": ["c"], "b": ["a"], "c": ["b"], "d": ["a"], "e": []}
    cycles = dag.find_cycles(deps)
    assert len(cycles) == 1
    assert set(cycles[0]) == {"a", "b", "c"} and len(cycles[0]) == 4
    assert _follows_dependencies(cycles[0], deps)


def test_acyclic_plan_has_no_cycles_and_unknown_parents_are_ignored():
    deps = {"a": [], "b": ["a", "ghost"], "c": ["a", "b"]}
    assert dag.find_cycles(deps) == []
    assert dag.is_acyclic(deps)


def test_find_cycles_stops_at_the_limit():
    # a complete digraph on 5 nodes has many simple cycles
    nodes = "abcde"
    deps = {n: [m for m in nodes if m != n] for n in nodes}
    assert len(dag.find_cycles(deps, limit=7)) == 7


def test_rung_a_drops_the_edge_into_the_lowest_priority_task():
    deps = {"a": ["b"], "b": ["a"]}
    result = dag.break_cycles_by_priority(deps, {"a": 1, "b": 5}, {"a": 0, "b": 1})
    assert result is not None
    fixed, dropped = result
    assert fixed == {"a": ["b"], "b": []}  # b (priority 5) no longer waits for a
    assert dropped == [("a", "b")]


def test_rung_a_breaks_every_cycle_one_edge_each():
    deps = {"a": ["b"], "b": ["a"], "c": ["d"], "d": ["c"], "e": ["a", "c"]}
    result = dag.break_cycles_by_priority(deps, {"a": 1, "b": 2, "c": 9, "d": 3, "e": 0}, {})
    assert result is not None
    fixed, dropped = result
    assert dag.is_acyclic(fixed)
    assert sorted(dropped) == [("a", "b"), ("d", "c")]
    assert fixed["e"] == ["a", "c"]  # edges on no cycle stay


def test_rung_a_declines_when_the_lowest_priority_edge_is_not_unique():
    deps = {"a": ["b"], "b": ["a"]}
    assert dag.break_cycles_by_priority(deps, {"a": 3, "b": 3}, {}) is None
    three = {"a": ["c"], "b": ["a"], "c": ["b"]}
    assert dag.break_cycles_by_priority(three, {"a": 1, "b": 7, "c": 7}, {}) is None


def test_rung_a_leaves_an_acyclic_plan_untouched():
    deps = {"a": [], "b": ["a"]}
    assert dag.break_cycles_by_priority(deps, {"a": 1, "b": 1}, {}) == ({"a": [], "b": ["a"]}, [])


@st.composite
def graphs(draw: st.DrawFn) -> dict[str, list[str]]:
    n = draw(st.integers(1, 12))
    ids = [f"t{i}" for i in range(n)]
    return {t: sorted(draw(st.sets(st.sampled_from(ids), max_size=3)) - {t}) for t in ids}


@settings(max_examples=200, deadline=None)
@given(deps=graphs(), data=st.data())
def test_rung_a_with_distinct_priorities_always_ends_acyclic_by_dropping_only_cycle_edges(deps, data):
    ids = list(deps)
    priorities = dict(zip(ids, data.draw(st.permutations(range(len(ids)))), strict=True))
    result = dag.break_cycles_by_priority(deps, priorities, {t: i for i, t in enumerate(ids)})
    assert result is not None  # no ties are possible
    fixed, dropped = result
    assert dag.is_acyclic(fixed)
    original = nx.DiGraph([(p, t) for t, ps in deps.items() for p in ps])
    for u, v in dropped:
        assert u in deps[v] and u not in fixed[v]
        assert nx.has_path(original, v, u), "an edge on no cycle was dropped"
    kept = {(p, t) for t, ps in fixed.items() for p in ps}
    assert kept | set(dropped) == {(p, t) for t, ps in deps.items() for p in ps}


def test_linear_order_chains_tasks_by_priority_then_plan_order():
    chain = dag.linear_order(["a", "b", "c", "d"], {"a": 5, "b": 1, "c": 5, "d": 0})
    assert chain == {"d": [], "b": ["d"], "a": ["b"], "c": ["a"]}
    assert dag.is_acyclic(chain)


def test_longest_remaining_and_critical_path():
    deps = {"a": [], "b": ["a"], "c": ["a"], "d": ["b", "c"]}
    duration = {"a": 1, "b": 10, "c": 2, "d": 4}
    assert dag.longest_remaining(deps, duration) == {"a": 15, "b": 14, "c": 6, "d": 4}
    assert dag.critical_path_length(deps, duration) == 15
    assert dag.critical_path_length({}, {}) == 0


def test_descendants_are_transitive_and_breadth_first():
    children = {"a": ["b", "c"], "b": ["d"], "c": ["d"], "d": ["e"], "e": [], "x": []}
    assert dag.descendants(children, "a") == ["b", "c", "d", "e"]
    assert dag.descendants(children, "x") == []


def test_tasks_writing_one_target_are_chained_in_plan_order():
    ids = ["a", "b", "c", "d"]
    target = {"a": "src/App.tsx", "b": "src/other.ts", "c": "src/App.tsx", "d": "src/App.tsx"}
    out = dag.serialize_shared_targets(ids, {t: [] for t in ids}, target)
    assert out == {"a": [], "b": [], "c": ["a"], "d": ["c"]}


def test_shared_target_already_ordered_either_way_gets_no_new_edge():
    ids = ["a", "b", "c"]
    target = {"a": "x.ts", "b": "x.ts", "c": None}
    # b already (transitively) after a
    assert dag.serialize_shared_targets(ids, {"a": [], "b": ["c"], "c": ["a"]}, target)["b"] == ["c"]
    # a already after b: adding b -> ... a -> b would make a cycle
    out = dag.serialize_shared_targets(ids, {"a": ["b"], "b": [], "c": []}, target)
    assert out == {"a": ["b"], "b": [], "c": []}
    assert dag.is_acyclic(out)


def test_every_pair_of_writers_of_one_target_is_ordered():
    # "a" already runs after "b"; "c" comes last in plan order and must follow both
    ids = ["a", "b", "c"]
    out = dag.serialize_shared_targets(ids, {"a": ["b"], "b": [], "c": []}, dict.fromkeys(ids, "x.ts"))
    g = dag.graph(out)
    assert dag.is_acyclic(out)
    for i, u in enumerate(ids):
        for v in ids[i + 1 :]:
            assert nx.has_path(g, u, v) or nx.has_path(g, v, u), (u, v)


@settings(max_examples=100, deadline=None, derandomize=True)
@given(st.dictionaries(st.sampled_from("abcdef"), st.lists(st.sampled_from("abcdef"), max_size=3), min_size=1))
def test_cycle_components_hold_exactly_the_tasks_on_some_cycle(deps):
    deps = {t: [d for d in ds if d in deps] for t, ds in deps.items()}
    groups, edges = dag.cycle_components(deps)
    on_cycles = {t for cycle in nx.simple_cycles(dag.graph(deps)) for t in cycle if len(cycle) > 1}
    assert {t for g in groups for t in g} == on_cycles
    members = {t: i for i, g in enumerate(groups) for t in g}
    for dependency, dependent in edges:
        assert dependency in deps[dependent] and members[dependency] == members[dependent]
