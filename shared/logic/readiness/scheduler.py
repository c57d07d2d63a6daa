"""The dispatcher's pure core: which task starts next. No I/O.

A task is ready the moment its own dependencies have completed. At most `max_concurrency` tasks of
a build are queued or running; among ready tasks the one with the longest remaining path (by
estimatedDuration, then lower `priority`, then plan order) starts first. Applying the same
"finished" twice changes nothing, so duplicates and reordering are harmless.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from shared.logic.readiness import dag
from shared.models.plan import Task


@dataclass(frozen=True)
class DagSpec:
    """The immutable shape of a plan, as the scheduler needs it."""

    order: tuple[str, ...]
    deps: dict[str, tuple[str, ...]]
    children: dict[str, tuple[str, ...]]
    key: dict[str, tuple[float, int, int]]  # sort key: smaller starts first

    @classmethod
    def from_tasks(cls, tasks: list[Task]) -> DagSpec:
        ids = [t.id for t in tasks]
        known = set(ids)
        deps = {t.id: tuple(d for d in t.dependencies if d in known) for t in tasks}
        children: dict[str, list[str]] = {i: [] for i in ids}
        for t, ps in deps.items():
            for p in ps:
                children[p].append(t)
        remaining = dag.longest_remaining(deps, {t.id: t.estimatedDuration for t in tasks})
        key = {t.id: (-remaining[t.id], t.priority, i) for i, t in enumerate(tasks)}
        return cls(tuple(ids), deps, {k: tuple(v) for k, v in children.items()}, key)


_FORMAT = 2  # tasks written as indexes into the plan order (1: by id)


@dataclass
class DispatchState:
    done: set[str] = field(default_factory=set)
    failed: set[str] = field(default_factory=set)
    skipped: set[str] = field(default_factory=set)
    cancelled: set[str] = field(default_factory=set)
    ready: set[str] = field(default_factory=set)
    running: dict[str, int] = field(default_factory=dict)  # taskId -> attempt queued/running
    attempts: dict[str, int] = field(default_factory=dict)  # last attempt started per task
    cost_usd: float = 0.0
    # "cancelled" | "timed_out" | "budget_exceeded" | "planning_failed": start nothing more
    halted: str | None = None
    last_sends: list[tuple[str, int]] = field(default_factory=list)
    started: bool = False

    def terminal(self) -> set[str]:
        return self.done | self.failed | self.skipped | self.cancelled

    def to_json(self, order: Sequence[str]) -> str:
        """The stored form. Each task is written as its index in the plan's order (`DagSpec.order`),
        not its id: the state of a plan at MAX_PLAN_TASKS stays a few KB whatever its ids' length,
        so it fits the build item beside everything else and commits in one conditional write."""
        index = {t: i for i, t in enumerate(order)}

        def ids(tasks: set[str]) -> list[int]:
            return sorted(index[t] for t in tasks)

        attempts = [0] * len(order)
        for t, a in self.attempts.items():
            attempts[index[t]] = a
        while attempts and not attempts[-1]:
            attempts.pop()
        return json.dumps(
            {
                "v": _FORMAT,
                "n": len(order),
                "done": ids(self.done),
                "failed": ids(self.failed),
                "skipped": ids(self.skipped),
                "cancelled": ids(self.cancelled),
                "ready": ids(self.ready),
                "running": sorted([index[t], a] for t, a in self.running.items()),
                "attempts": attempts,
                "cost": self.cost_usd,
                "halted": self.halted,
                "lastSends": [[index[t], a] for t, a in self.last_sends],
                "started": self.started,
            },
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, raw: str | None, order: Sequence[str]) -> DispatchState:
        """Read what `to_json` wrote for the same plan order (or the older form, keyed by task id)."""
        if not raw:
            return cls()
        d: dict[str, Any] = json.loads(raw)
        if d.get("v") != _FORMAT:
            return cls._from_ids(d)
        if d["n"] != len(order):
            raise ValueError(f"dispatch state written for a plan of {d['n']} tasks, read with {len(order)}")

        def ids(indexes: list[int]) -> set[str]:
            return {order[i] for i in indexes}

        return cls(
            done=ids(d["done"]),
            failed=ids(d["failed"]),
            skipped=ids(d["skipped"]),
            cancelled=ids(d["cancelled"]),
            ready=ids(d["ready"]),
            running={order[i]: int(a) for i, a in d["running"]},
            attempts={order[i]: int(a) for i, a in enumerate(d["attempts"]) if a},
            cost_usd=float(d.get("cost", 0.0)),
            halted=d.get("halted"),
            last_sends=[(order[i], int(a)) for i, a in d.get("lastSends", [])],
            started=bool(d.get("started")),
        )

    @classmethod
    def _from_ids(cls, d: dict[str, Any]) -> DispatchState:
        return cls(
            done=set(d["done"]),
            failed=set(d["failed"]),
            skipped=set(d["skipped"]),
            cancelled=set(d.get("cancelled", ())),
            ready=set(d["ready"]),
            running={k: int(v) for k, v in d["running"].items()},
            attempts={k: int(v) for k, v in d.get("attempts", {}).items()},
            cost_usd=float(d.get("cost", 0.0)),
            halted=d.get("halted"),
            last_sends=[(t, int(a)) for t, a in d.get("lastSends", [])],
            started=bool(d.get("started")),
        )


@dataclass
class Decision:
    sends: list[tuple[str, int]] = field(default_factory=list)  # (taskId, attempt) to enqueue
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (taskId, failed dependency)
    duplicate: bool = False
    all_terminal: bool = False


def start(spec: DagSpec, state: DispatchState, max_concurrency: int) -> Decision:
    """Seed: every task whose dependencies have completed is ready (with a fresh state: those
    without dependencies); fill the window.

    The state may already hold tasks the plan step started while the plan streamed: they keep what
    they have; the rest of the plan joins them. A halt decided meanwhile cancels the tasks that never
    started, and the dependents of a task that failed meanwhile are skipped."""
    if state.started:
        return Decision(sends=list(state.last_sends), duplicate=True, all_terminal=_all_terminal(spec, state))
    state.started = True
    if state.halted is not None:
        return halt(spec, state, state.halted)
    decision = Decision()
    position = {t: i for i, t in enumerate(spec.order)} if state.failed or state.skipped else {}
    for failed in sorted(state.failed | state.skipped, key=position.__getitem__):
        for child in dag.descendants(spec.children, failed):
            if child in state.terminal() or child in state.running:
                continue
            state.ready.discard(child)
            state.skipped.add(child)
            decision.skipped.append((child, _failed_parent(spec, state, child, failed)))
    state.ready |= {
        t
        for t in spec.order
        if t not in state.terminal() and t not in state.running and all(p in state.done for p in spec.deps[t])
    }
    return _fill(spec, state, max_concurrency, decision)


def task_succeeded(
    spec: DagSpec, state: DispatchState, task_id: str, max_concurrency: int, cost_usd: float = 0.0
) -> Decision:
    if task_id in state.terminal() or task_id not in spec.deps:
        return duplicate(spec, state)
    state.running.pop(task_id, None)
    state.ready.discard(task_id)
    state.done.add(task_id)
    state.cost_usd += cost_usd or 0.0
    for child in spec.children[task_id]:
        if child in state.terminal() or child in state.running:
            continue
        if all(p in state.done for p in spec.deps[child]):
            state.ready.add(child)
    return _fill(spec, state, max_concurrency, Decision())


def task_failed(
    spec: DagSpec, state: DispatchState, task_id: str, max_concurrency: int, cost_usd: float = 0.0
) -> Decision:
    """A task failed for good: its transitive dependents are skipped, other branches go on."""
    if task_id in state.terminal() or task_id not in spec.deps:
        return duplicate(spec, state)
    state.running.pop(task_id, None)
    state.ready.discard(task_id)
    state.failed.add(task_id)
    state.cost_usd += cost_usd or 0.0
    decision = Decision()
    for child in dag.descendants(spec.children, task_id):
        if child in state.terminal() or child in state.running:
            continue
        state.ready.discard(child)
        state.skipped.add(child)
        decision.skipped.append((child, _failed_parent(spec, state, child, task_id)))
    return _fill(spec, state, max_concurrency, decision)


def halt(spec: DagSpec, state: DispatchState, reason: str) -> Decision:
    """Start nothing more; tasks that never started are cancelled."""
    state.halted = state.halted or reason
    for t in spec.order:
        if t not in state.terminal() and t not in state.running:
            state.cancelled.add(t)
    state.ready.clear()
    state.last_sends = []
    return Decision(all_terminal=_all_terminal(spec, state))


def retry(spec: DagSpec, state: DispatchState, task_id: str, max_concurrency: int) -> list[str]:
    """Re-open a failed task and its skipped dependents; returns the re-opened ids.

    Only what can run again is re-opened: a task that also depends on another failed, skipped or
    cancelled task stays as it is, since re-opening it would leave the build waiting for it forever.
    When the run was halted (time limit, budget), the tasks the halt cancelled re-open too: they
    never ran, and without them the build could never complete.
    """
    closed = state.failed | state.skipped | state.cancelled
    if task_id not in closed:
        return []  # done, running or still to come: nothing to re-open
    candidates = [task_id] + [t for t in dag.descendants(spec.children, task_id) if t in state.skipped]
    return _reopen(spec, state, candidates)


def skip(spec: DagSpec, state: DispatchState, task_id: str, max_concurrency: int) -> list[str] | None:
    """The user gives up on a failed task: it counts as settled for its dependents, which run without
    its output. Returns the dependents re-opened (possibly none), or None if the task is not failed."""
    if task_id not in state.failed:
        return None
    state.failed.discard(task_id)
    state.done.add(task_id)  # satisfies its dependents; the task itself stays `skipped` (reason user)
    candidates = [t for t in dag.descendants(spec.children, task_id) if t in state.skipped]
    reopened = _reopen(spec, state, candidates)
    state.halted = None
    return reopened


def _reopen(spec: DagSpec, state: DispatchState, candidates: list[str]) -> list[str]:
    if state.halted is not None:
        candidates = candidates + [t for t in spec.order if t in state.cancelled and t not in candidates]
    closed = state.failed | state.skipped | state.cancelled
    reopen = set(candidates)
    while True:
        blocked = {t for t in reopen if any(p in closed and p not in reopen for p in spec.deps[t])}
        if not blocked:
            break
        reopen -= blocked
    reopened = [t for t in candidates if t in reopen]
    if not reopened:
        return []
    for t in reopened:
        state.failed.discard(t)
        state.skipped.discard(t)
        state.cancelled.discard(t)
    state.halted = None
    for t in reopened:
        if all(p in state.done for p in spec.deps[t]):
            state.ready.add(t)
    return reopened


def all_terminal(spec: DagSpec, state: DispatchState) -> bool:
    """Every task settled and none in flight: the run's Execute step is (being) answered."""
    return _all_terminal(spec, state)


def fill(spec: DagSpec, state: DispatchState, max_concurrency: int) -> Decision:
    return _fill(spec, state, max_concurrency, Decision())


def _fill(spec: DagSpec, state: DispatchState, max_concurrency: int, decision: Decision) -> Decision:
    if state.halted is None:
        free = max_concurrency - len(state.running)
        if free > 0 and state.ready:
            chosen = sorted(state.ready, key=spec.key.__getitem__)[:free]
            for t in chosen:
                state.ready.discard(t)
                attempt = state.attempts.get(t, 0) + 1
                state.attempts[t] = attempt
                state.running[t] = attempt
                decision.sends.append((t, attempt))
    state.last_sends = list(decision.sends)
    decision.all_terminal = _all_terminal(spec, state)
    return decision


def duplicate(spec: DagSpec, state: DispatchState) -> Decision:
    """Nothing changes: a message already applied (or one about an attempt no longer in flight)."""
    return Decision(sends=list(state.last_sends), duplicate=True, all_terminal=_all_terminal(spec, state))


def _all_terminal(spec: DagSpec, state: DispatchState) -> bool:
    return len(state.terminal()) >= len(spec.order) and not state.running


def _failed_parent(spec: DagSpec, state: DispatchState, child: str, default: str) -> str:
    for p in spec.deps[child]:
        if p in state.failed or p in state.skipped:
            return p if p in state.failed else default
    return default
