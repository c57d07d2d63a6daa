"""Pure graph logic over a plan's tasks: cycles, cycle breaking, ranks, descendants. No I/O.

Edges point from a dependency to its dependent (dep -> task).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import networkx as nx


def _nx():  # type: ignore[no-untyped-def]
    """networkx, imported on first use (it costs ~100 ms, and most handlers never need it)."""
    import networkx

    return networkx


def graph(deps: Mapping[str, Iterable[str]]) -> nx.DiGraph:
    g = _nx().DiGraph()
    g.add_nodes_from(deps)
    for task, parents in deps.items():
        for parent in parents:
            if parent in deps:
                g.add_edge(parent, task)
    return g


def find_cycles(deps: Mapping[str, Iterable[str]], limit: int = 20) -> list[list[str]]:
    """Simple cycles, each as a node list [a, b, ..., a] in dependency order, at most `limit`.

    Each cycle starts at its task listed first in `deps` (plan order), so a cycle is described the
    same way every time ("a → b → a", never "b → a → b" for the same plan).
    """
    g = graph(deps)
    rank = {t: i for i, t in enumerate(deps)}
    cycles: list[list[str]] = []
    for cycle in _nx().simple_cycles(g):
        first = min(range(len(cycle)), key=lambda i: rank[cycle[i]])
        rotated = cycle[first:] + cycle[:first]
        cycles.append([*rotated, rotated[0]])
        if len(cycles) >= limit:
            break
    return sorted(cycles, key=lambda c: [rank[t] for t in c])


def cycle_components(deps: Mapping[str, Iterable[str]]) -> tuple[list[list[str]], list[list[str]]]:
    """The groups of tasks caught in cycles (strongly connected, in plan order) and the edges among
    them as [dependency, dependent]: what a client draws to let the user cut a cycle."""
    g = graph(deps)
    rank = {t: i for i, t in enumerate(deps)}
    groups = [sorted(c, key=rank.__getitem__) for c in _nx().strongly_connected_components(g) if len(c) > 1]
    groups.sort(key=lambda c: rank[c[0]])
    members = {t: i for i, c in enumerate(groups) for t in c}
    edges = sorted(
        ([u, v] for u, v in g.edges if u in members and members[u] == members.get(v)),
        key=lambda e: (rank[e[1]], rank[e[0]]),
    )
    return groups, edges


def describe_cycle(cycle: Sequence[str]) -> str:
    return " → ".join(cycle)


def is_acyclic(deps: Mapping[str, Iterable[str]]) -> bool:
    return _nx().is_directed_acyclic_graph(graph(deps))


def break_cycles_by_priority(
    deps: Mapping[str, Sequence[str]], priority: Mapping[str, int], order: Mapping[str, int]
) -> tuple[dict[str, list[str]], list[tuple[str, str]]] | None:
    """Rung A: drop the lowest-priority edge of each cycle until none is left.

    An edge's weight is its dependent's priority (higher number = lower priority). A cycle whose
    lowest-priority edge is not unique gives no principled choice, so the heuristic declines
    (returns None) and the next rung decides.
    """
    current = {t: list(ps) for t, ps in deps.items()}
    dropped: list[tuple[str, str]] = []
    for _ in range(sum(len(v) for v in current.values()) + 1):
        g = graph(current)
        try:
            cycle = _nx().find_cycle(g)
        except _nx().NetworkXNoCycle:
            return current, dropped
        edges = [(u, v) for u, v in cycle]
        worst = max(priority.get(v, 0) for _, v in edges)
        candidates = [(u, v) for u, v in edges if priority.get(v, 0) == worst]
        if len(candidates) != 1:
            return None
        u, v = candidates[0]
        current[v] = [p for p in current[v] if p != u]
        dropped.append((u, v))
    return None


def linear_order(task_ids: Sequence[str], priority: Mapping[str, int]) -> dict[str, list[str]]:
    """Rung C: run one by one by priority (plan order among equals): each depends on the previous."""
    ordered = sorted(task_ids, key=lambda t: (priority.get(t, 0), task_ids.index(t)))
    return {t: ([ordered[i - 1]] if i else []) for i, t in enumerate(ordered)}


def longest_remaining(deps: Mapping[str, Iterable[str]], duration: Mapping[str, float]) -> dict[str, float]:
    """For each task, its duration plus the longest chain of dependents after it (critical path)."""
    g = graph(deps)
    rank: dict[str, float] = {}
    for node in reversed(list(_nx().topological_sort(g))):
        after = max((rank[c] for c in g.successors(node)), default=0.0)
        rank[node] = float(duration.get(node, 0.0)) + after
    return rank


def critical_path_length(deps: Mapping[str, Iterable[str]], duration: Mapping[str, float]) -> float:
    ranks = longest_remaining(deps, duration)
    return max(ranks.values(), default=0.0)


def descendants(children: Mapping[str, Iterable[str]], start: str) -> list[str]:
    """Every task that transitively depends on `start`, in breadth-first order."""
    seen: set[str] = set()
    out: list[str] = []
    frontier = list(children.get(start, ()))
    while frontier:
        nxt: list[str] = []
        for t in frontier:
            if t not in seen:
                seen.add(t)
                out.append(t)
                nxt.extend(children.get(t, ()))
        frontier = nxt
    return out


def serialize_shared_targets(
    task_ids: Sequence[str], deps: Mapping[str, Sequence[str]], target: Mapping[str, str | None]
) -> dict[str, list[str]]:
    """Two tasks writing one targetPath never run at once: add an edge between them in plan order
    (unless one already transitively precedes the other).

    Every pair of writers is checked, not only neighbours: with `a` already after `b` and `c` after
    `b`, the pair `a`, `c` would otherwise stay unordered and could run at once."""
    current = {t: list(deps.get(t, ())) for t in task_ids}
    by_path: dict[str, list[str]] = {}
    for t in task_ids:
        path = target.get(t)
        if path:
            by_path.setdefault(path, []).append(t)
    g = graph(current)
    for same in by_path.values():
        for j, later in enumerate(same):
            for earlier in reversed(same[:j]):  # nearest first, so a plain chain needs one edge each
                if _nx().has_path(g, earlier, later) or _nx().has_path(g, later, earlier):
                    continue
                current[later].append(earlier)
                g.add_edge(earlier, later)
    return current
