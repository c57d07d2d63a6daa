"""From what the LLM wrote to a runnable plan (shared.logic.readiness.plan_validation): healing, repairs and the
cycle recovery ladder of docs/plans.md (A auto-priority, B llm-healed, C linear-fallback, D blocked,
E failed). The healer is a fake with the real signature (purpose, text, error, extra) -> str."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.logic.readiness import dag
from shared.logic.readiness.plan_validation import validate_edited, validate_plan
from shared.models.plan import Recovery, Task, UnsafePathError, safe_relative_path
from shared.providers.base import MalformedTask, ProviderError
from tests.helpers import task

# The seed's copy for rung C, letter for letter (what the user is asked).
# The original design's copy, without the "Proceed?" nobody could answer: the build goes on.
SEQUENTIAL_COPY = "We couldn't optimize task order, so steps will run one-by-one. Expect a slightly longer build."


class FakeHealer:
    """Answers heal calls from a list of replies (a reply may be an exception to raise)."""

    def __init__(self, *replies: str | Exception) -> None:
        self.replies = list(replies)
        self.calls: list[tuple[str, str, str, dict[str, Any]]] = []

    def __call__(self, purpose: str, text: str, error: str, extra: dict[str, Any]) -> str:
        self.calls.append((purpose, text, error, extra))
        if not self.replies:
            raise ProviderError("no more replies")
        reply = self.replies.pop(0)
        if isinstance(reply, Exception):
            raise reply
        return reply


def _validate(items: list, heal: Any = None, *, allow_linear: bool = True, approval_required: bool = False):
    return validate_plan(items, heal, allow_linear=allow_linear, approval_required=approval_required)


def _deps(plan) -> dict[str, list[str]]:
    return {t.id: list(t.dependencies) for t in plan.tasks}


def _warnings(plan, kind: str) -> list:
    return [w for w in plan.warnings if w.warning == kind]


# --- a clean plan ------------------------------------------------------------------------------------
def test_clean_plan_passes_unchanged():
    plan = _validate([task("a"), task("b", "a"), task("c", "a", "b")])
    assert _deps(plan) == {"a": [], "b": ["a"], "c": ["a", "b"]}
    assert plan.recovery is None and not plan.cycles and not plan.warnings
    assert not plan.blocked and not plan.failed


# --- the ladder ------------------------------------------------------------------------------------
def test_cycles_are_reported_as_arrows():
    plan = _validate([task("a", "b", priority=1), task("b", "a", priority=5)])
    assert plan.cycles in (["a → b → a"], ["b → a → b"])


def test_rung_a_drops_the_unique_lowest_priority_edge():
    healer = FakeHealer()
    plan = _validate([task("a", "b", priority=1), task("b", "a", priority=5), task("c", "b")], healer)
    assert plan.recovery == Recovery.auto_priority
    assert _deps(plan) == {"a": ["b"], "b": [], "c": ["b"]}  # b (lowest priority) stops waiting for a
    assert healer.calls == []  # the LLM was not asked
    assert not _warnings(plan, "sequential_execution")


def test_rung_a_declines_on_a_tie_and_rung_b_uses_the_healers_dependencies():
    reply = json.dumps(
        {
            "tasks": [
                {"id": "a", "dependencies": []},
                {"id": "b", "dependencies": ["a"]},
                {"id": "c", "dependencies": ["b", "ghost", "c"]},
            ]
        }
    )
    healer = FakeHealer(reply)
    plan = _validate([task("a", "b"), task("b", "a"), task("c", "b")], healer)
    assert plan.recovery == Recovery.llm_healed
    assert _deps(plan) == {"a": [], "b": ["a"], "c": ["b"]}  # unknown and self references ignored
    [(purpose, text, error, extra)] = healer.calls
    assert purpose == "dependencies"
    assert {t["id"] for t in json.loads(text)["tasks"]} == {"a", "b", "c"}
    assert "cycle" in error
    assert extra["cycles"] == plan.cycles
    assert not _warnings(plan, "sequential_execution")


@pytest.mark.parametrize(
    "reply",
    [
        json.dumps({"tasks": [{"id": "a", "dependencies": ["b"]}, {"id": "b", "dependencies": ["a"]}]}),
        "sorry, I cannot help with that",
        ProviderError("the model is down"),
    ],
)
def test_rung_c_runs_one_by_one_by_priority_when_healing_does_not_help(reply):
    healer = FakeHealer(reply)
    plan = _validate([task("a", "b", priority=4), task("b", "a", priority=4), task("c", priority=1)], healer)
    assert plan.recovery == Recovery.linear_fallback
    assert _deps(plan) == {"c": [], "a": ["c"], "b": ["a"]}  # priority, then plan order
    [warning] = _warnings(plan, "sequential_execution")
    assert warning.message == SEQUENTIAL_COPY
    assert warning.cycles == plan.cycles and plan.cycles
    assert not plan.blocked and not plan.failed


def test_rung_c_without_a_healer():
    plan = _validate([task("a", "b"), task("b", "a")])
    assert plan.recovery == Recovery.linear_fallback
    assert _deps(plan) == {"a": [], "b": ["a"]}


def test_rung_d_blocks_when_linear_fallback_is_off_and_approval_is_required():
    plan = _validate([task("a", "b"), task("b", "a")], FakeHealer("no"), allow_linear=False, approval_required=True)
    assert plan.blocked and not plan.failed
    assert plan.cycles
    assert not _warnings(plan, "sequential_execution")


def test_rung_e_fails_otherwise():
    plan = _validate([task("a", "b"), task("b", "a")], None, allow_linear=False, approval_required=False)
    assert plan.failed and not plan.blocked
    assert plan.cycles


def test_rungs_a_and_b_still_apply_with_linear_fallback_off():
    plan = _validate([task("a", "b", priority=1), task("b", "a", priority=2)], None, allow_linear=False)
    assert plan.recovery == Recovery.auto_priority and not plan.failed


# --- repairs ------------------------------------------------------------------------------------------
def test_unknown_dependencies_and_self_edges_are_dropped_with_warnings():
    plan = _validate([task("a", "a"), task("b", "a", "ghost", "a")])
    assert _deps(plan) == {"a": [], "b": ["a"]}
    assert len(_warnings(plan, "self_dependency")) == 1
    [unknown] = _warnings(plan, "unknown_dependency")
    assert "ghost" in unknown.message


def test_duplicate_ids_are_renamed():
    plan = _validate([task("a", name="first"), task("a", name="second"), task("a", name="third")])
    assert [(t.id, t.name) for t in plan.tasks] == [("a", "first"), ("a-2", "second"), ("a-3", "third")]
    assert len(_warnings(plan, "duplicate_id")) == 2


def test_malformed_fragment_is_healed_once():
    healer = FakeHealer(json.dumps(task("b", "a")))
    plan = _validate(
        [task("a"), MalformedTask(raw='{"id": "b", "type": "create_file", "na', error="truncated")], healer
    )
    assert [t.id for t in plan.tasks] == ["a", "b"]
    assert _deps(plan)["b"] == ["a"]
    [(purpose, text, error, _)] = healer.calls
    assert purpose == "task" and text.startswith('{"id": "b"') and error == "truncated"
    assert not plan.warnings


def test_invalid_task_object_is_healed_with_the_validation_error():
    healer = FakeHealer(json.dumps(task("b")))
    plan = _validate([{"id": "b", "type": "write_poem", "name": "B"}], healer)
    assert [t.id for t in plan.tasks] == ["b"]
    [(purpose, text, error, _)] = healer.calls
    assert purpose == "task" and "write_poem" in text and "type" in error


@pytest.mark.parametrize(
    "reply",
    [
        '{"id": "b", "type": "still_wrong", "name": "B"}',  # healed but still invalid: not healed twice
        "no JSON here",
        ProviderError("model down"),
    ],
)
def test_task_that_cannot_be_healed_is_dropped_with_a_warning(reply):
    healer = FakeHealer(reply, json.dumps(task("b")))  # a second reply that must not be asked for
    plan = _validate([task("a"), {"id": "b", "type": "write_poem", "name": "B"}], healer)
    assert [t.id for t in plan.tasks] == ["a"]
    assert len(healer.calls) == 1
    [dropped] = _warnings(plan, "invalid_task")
    assert "b" in dropped.message


def test_without_a_healer_a_malformed_task_is_dropped_with_a_warning():
    plan = _validate([task("a"), MalformedTask(raw="{{{", error="bad json")])
    assert [t.id for t in plan.tasks] == ["a"]
    assert len(_warnings(plan, "invalid_task")) == 1


@pytest.mark.parametrize(
    "path",
    [
        "/etc/passwd",
        "../outside.txt",
        "src/../../outside.txt",
        "src\\App.tsx",
        "src/a\x00.ts",
        "a" * 256,
        "C:/windows/x",
        "",
        "./",
    ],
)
def test_unsafe_target_path_is_refused(path):
    with pytest.raises(UnsafePathError):
        safe_relative_path(path)
    plan = _validate([task("a"), task("b", target=path)])
    assert [t.id for t in plan.tasks] == ["a"]
    assert len(_warnings(plan, "invalid_task")) == 1


@pytest.mark.parametrize(
    ("path", "clean"),
    [
        ("src/components/Hero.tsx", "src/components/Hero.tsx"),
        ("./src//a.ts", "src/a.ts"),
        ("a" * 255, "a" * 255),
        (".github/workflows/ci.yml", ".github/workflows/ci.yml"),
    ],
)
def test_safe_target_paths_are_kept(path, clean):
    assert safe_relative_path(path) == clean
    plan = _validate([task("a", target=path)])
    assert plan.tasks[0].input.targetPath == clean


def test_tasks_writing_the_same_target_are_serialized_in_plan_order():
    plan = _validate(
        [
            task("a", target="src/App.tsx"),
            task("b", target="src/b.ts"),
            task("c", target="src/App.tsx"),
            task("d", target="./src/App.tsx"),
        ]
    )
    assert _deps(plan) == {"a": [], "b": [], "c": ["a"], "d": ["c"]}


# --- edited plans (approval route) ------------------------------------------------------------------
def test_edited_plan_must_be_acyclic_with_unique_known_ids():
    ok = [Task.model_validate(task("a")), Task.model_validate(task("b", "a"))]
    assert validate_edited(ok) == ok
    bad_cases = {
        "no tasks": [],
        "unique": [Task.model_validate(task("a")), Task.model_validate(task("a"))],
        "unknown": [Task.model_validate(task("a", "ghost"))],
        "cycles": [Task.model_validate(task("a", "b")), Task.model_validate(task("b", "a"))],
    }
    for words, tasks in bad_cases.items():
        with pytest.raises(ValueError, match=words):
            validate_edited(tasks)


# --- any input ------------------------------------------------------------------------------------
IDS = [f"t{i}" for i in range(10)]


@st.composite
def llm_items(draw: st.DrawFn) -> list:
    items: list = []
    for _ in range(draw(st.integers(0, 12))):
        kind = draw(st.integers(0, 9))
        if kind == 0:
            items.append(MalformedTask(raw=draw(st.text(max_size=20)), error="broken"))
            continue
        deps = draw(st.lists(st.sampled_from([*IDS, "ghost"]), max_size=4))
        item = task(
            draw(st.sampled_from(IDS)),
            *deps,
            priority=draw(st.integers(0, 3)),
            target=draw(st.sampled_from([None, None, "a.ts", "b.ts", "../x"])),
        )
        if kind == 1:
            item["type"] = "nonsense"
        items.append(item)
    return items


healers = st.sampled_from(
    [
        None,
        lambda p, t, e, x: "garbage",
        lambda p, t, e, x: (_ for _ in ()).throw(ProviderError("down")),
        # answers cycles with (possibly still cyclic) dependencies and tasks with a fresh valid task
        lambda p, t, e, x: (
            json.dumps({"tasks": [{"id": i, "dependencies": IDS[:3]} for i in IDS]})
            if p == "dependencies"
            else json.dumps(task("t9", "t0"))
        ),
    ]
)


@settings(max_examples=300, deadline=None)
@given(items=llm_items(), heal=healers, allow_linear=st.booleans(), approval=st.booleans())
def test_any_plan_ends_failed_blocked_or_acyclic_with_known_references(items, heal, allow_linear, approval):
    plan = validate_plan(items, heal, allow_linear=allow_linear, approval_required=approval)
    assert not (plan.failed and plan.blocked)
    if plan.failed or plan.blocked:
        assert plan.cycles
        assert plan.blocked == approval and not allow_linear
        return
    ids = [t.id for t in plan.tasks]
    assert len(ids) == len(set(ids))
    for t in plan.tasks:
        assert set(t.dependencies) <= set(ids) - {t.id}
        assert len(t.dependencies) == len(set(t.dependencies))
    assert dag.is_acyclic(_deps(plan))
    if plan.cycles:
        assert plan.recovery is not None
    by_target: dict[str, list[str]] = {}
    for t in plan.tasks:
        if t.input.targetPath:
            by_target.setdefault(t.input.targetPath, []).append(t.id)
    graph = dag.graph(_deps(plan))
    import networkx as nx

    for same in by_target.values():  # never two writers of one file at once
        for i, a in enumerate(same):
            for b in same[i + 1 :]:
                assert nx.has_path(graph, a, b) or nx.has_path(graph, b, a)


def test_an_edited_plan_runs_writers_of_one_path_one_after_another():
    edited = [Task.model_validate(task(t, type="modify_file", target="src/app.txt")) for t in ("e1", "e2")]
    assert [t.dependencies for t in validate_edited(edited)] == [[], ["e1"]]


def test_rung_d_reports_the_tasks_and_edges_caught_in_cycles():
    tasks = [task("a", "b"), task("b", "a"), task("c", "a"), task("d", "e"), task("e", "d")]
    plan = validate_plan(tasks, None, allow_linear=False, approval_required=True)
    assert plan.blocked
    assert plan.cycle_tasks == [["a", "b"], ["d", "e"]]
    assert plan.cycle_edges == [["b", "a"], ["a", "b"], ["e", "d"], ["d", "e"]]  # [dependency, dependent]


# --- field limits -------------------------------------------------------------------------------------
def test_over_long_fields_from_the_llm_are_cut_with_one_warning_not_dropped():
    long_a, long_b = "a" * 70, "a" * 64 + "-other"  # one 64-character prefix for two ids
    items = [
        task(long_a, name="N" * 300, description="d" * 5000),
        task(long_b, long_a),
        task("c", long_a, long_b, input={"prompt": "p" * 9000, "context": "c" * 9000, "dependencies": [long_b]}),
    ]
    plan = _validate(items)
    ids = [t.id for t in plan.tasks]
    assert len(ids) == 3 and len(set(ids)) == 3 and all(len(i) <= 64 for i in ids)
    a, b, c = plan.tasks
    assert a.id == "a" * 64 and b.id.startswith("a" * 60) and b.dependencies == [a.id]
    assert c.dependencies == [b.id]  # a reference written with the long id follows it
    assert len(a.name) == 200 and len(a.description) == 2000 and a.description.endswith("…")
    assert len(c.input.prompt or "") == 8000 and len(c.input.context or "") == 8000
    [warning] = plan.warnings
    assert warning.warning == "fields_truncated" and warning.message.startswith("3 task(s)")


def test_a_renamed_duplicate_id_stays_within_the_id_limit():
    plan = _validate([task("x" * 64), task("x" * 64)])
    assert [len(t.id) for t in plan.tasks] == [64, 64] and plan.tasks[1].id.endswith("-2")


def test_an_edited_plan_over_the_limit_or_with_an_over_long_field_is_refused():
    with pytest.raises(ValueError, match=r"at most 2 .*MAX_PLAN_TASKS"):
        validate_edited([Task.model_validate(task(i)) for i in "abc"], max_tasks=2)
    with pytest.raises(ValueError, match="at most 2000 characters"):
        Task.model_validate(task("a", description="d" * 2001))
    with pytest.raises(ValueError, match="at most 64 characters"):
        Task.model_validate(task("a" * 65))


def test_a_cycle_through_a_whole_big_plan_is_described_in_a_bounded_line():
    n = 1000
    items = [task(f"t{i:03d}-".ljust(64, "x"), f"t{(i - 1) % n:03d}-".ljust(64, "x"), priority=5) for i in range(n)]
    plan = _validate(items, allow_linear=False, approval_required=True)  # a tie: rung A declines, D blocks
    assert plan.blocked
    [cycle] = plan.cycles
    assert "… (989 more)" in cycle and len(cycle) < 1000
