"""The dispatcher's pure core (shared.logic.readiness.scheduler) against random DAGs and hostile delivery.

The simulation plays the task-finished queue: it delivers "finished" for running tasks in a random
order, re-delivers old ones (at-least-once, out of order), and persists the dispatch state through
JSON between every step, exactly as the dispatcher does with DynamoDB. A reference model written
here (not the scheduler's own helpers) says what must have happened.
"""

from __future__ import annotations

import random
from collections.abc import Iterable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.logic.readiness import scheduler
from shared.models.plan import Task
from tests.helpers import task

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# --- the reference model -------------------------------------------------------------------------
class Reference:
    def __init__(self, tasks: list[Task]) -> None:
        self.order = [t.id for t in tasks]
        self.deps = {t.id: list(t.dependencies) for t in tasks}
        self.children: dict[str, list[str]] = {t: [] for t in self.order}
        for t, ps in self.deps.items():
            for p in ps:
                self.children[p].append(t)
        duration = {t.id: t.estimatedDuration for t in tasks}
        remaining: dict[str, float] = {}

        def rem(t: str) -> float:
            if t not in remaining:
                remaining[t] = duration[t] + max((rem(c) for c in self.children[t]), default=0.0)
            return remaining[t]

        self.key = {t.id: (-rem(t.id), t.priority, i) for i, t in enumerate(tasks)}

    def descendants(self, roots: Iterable[str]) -> set[str]:
        out: set[str] = set()
        stack = [c for r in roots for c in self.children[r]]
        while stack:
            t = stack.pop()
            if t not in out:
                out.add(t)
                stack.extend(self.children[t])
        return out


@st.composite
def plans(draw: st.DrawFn, max_tasks: int = 60) -> tuple[list[Task], int]:
    """A random DAG (edges from earlier to later tasks), listed in a random plan order."""
    n = draw(st.integers(1, max_tasks))
    tasks = []
    for i in range(n):
        parents = draw(st.sets(st.integers(0, i - 1), max_size=min(i, 4))) if i else set()
        tasks.append(
            Task.model_validate(
                task(
                    f"t{i}",
                    *(f"t{p}" for p in sorted(parents)),
                    duration=draw(st.integers(0, 40)),
                    priority=draw(st.integers(0, 4)),
                )
            )
        )
    tasks = draw(st.permutations(tasks))
    return list(tasks), draw(st.integers(1, 8))


# --- the simulation ------------------------------------------------------------------------------
class Sim:
    def __init__(self, tasks: list[Task], max_concurrency: int, failing: set[str] = frozenset()) -> None:
        self.ref = Reference(tasks)
        self.spec = scheduler.DagSpec.from_tasks(tasks)
        self.state = scheduler.DispatchState()
        self.mc = max_concurrency
        self.failing = set(failing)
        self.sent: dict[str, int] = {}
        self.next_attempt: dict[str, int] = {}
        self.all_sends: set[tuple[str, int]] = set()
        self.in_flight: set[str] = set()
        self.done: set[str] = set()
        self.failed: set[str] = set()
        self.skipped: dict[str, str] = {}  # task -> the dependency the decision named
        self.delivered: list[tuple[str, bool]] = []  # (task, succeeded) in delivery order
        self.halted = False
        self.terminal_seen = False

    # a step = decide, check, persist through JSON (as the dispatcher does)
    def _persist(self) -> None:
        restored = scheduler.DispatchState.from_json(self.state.to_json(self.spec.order), self.spec.order)
        assert restored == self.state
        self.state = restored

    def start(self) -> scheduler.Decision:
        d = scheduler.start(self.spec, self.state, self.mc)
        assert not d.duplicate
        self._check(d)
        return d

    def finish(self, task_id: str) -> scheduler.Decision:
        ok = task_id not in self.failing
        if ok:
            d = scheduler.task_succeeded(self.spec, self.state, task_id, self.mc)
        else:
            d = scheduler.task_failed(self.spec, self.state, task_id, self.mc)
        assert not d.duplicate
        self.in_flight.discard(task_id)
        (self.done if ok else self.failed).add(task_id)
        self.delivered.append((task_id, ok))
        for child, dependency in d.skipped:
            assert child not in self.skipped, f"{child} skipped twice"
            assert child in self.ref.descendants([task_id])
            assert dependency in self.failed
            assert child in self.ref.descendants([dependency])
            self.skipped[child] = dependency
        if ok:
            assert not d.skipped
        self._check(d)
        return d

    def redeliver(self, index: int) -> scheduler.Decision:
        """An old "finished" comes again: nothing may change; at most the last sends are repeated."""
        task_id, ok = self.delivered[index]
        before = self.state.to_json(self.spec.order)
        if ok:
            d = scheduler.task_succeeded(self.spec, self.state, task_id, self.mc)
        else:
            d = scheduler.task_failed(self.spec, self.state, task_id, self.mc)
        assert d.duplicate
        assert self.state.to_json(self.spec.order) == before
        assert set(d.sends) <= self.all_sends, "a duplicate started something new"
        assert not d.skipped
        assert d.all_terminal == self._everything_terminal()
        if self.halted:
            assert d.sends == []
        self._persist()
        return d

    def _everything_terminal(self) -> bool:
        settled = self.done | self.failed | set(self.skipped) | self.state.cancelled
        return not self.in_flight and settled >= set(self.ref.order)

    def _check(self, d: scheduler.Decision) -> None:
        st_ = self.state
        for t, attempt in d.sends:
            assert not self.halted, "sent after halt"
            assert self.sent.get(t, 0) == 0, f"{t} sent twice"
            assert attempt == self.next_attempt.get(t, 1)
            assert all(p in self.done for p in self.ref.deps[t]), f"{t} sent before its parents succeeded"
            self.sent[t] = 1
            self.all_sends.add((t, attempt))
            self.in_flight.add(t)
        assert len(st_.running) <= self.mc
        assert set(st_.running) == self.in_flight
        if not self.halted:
            # nothing ready is forgotten, and the window never idles while work is ready
            for t in self.ref.order:
                runnable = (
                    t not in self.sent and t not in self.skipped and all(p in self.done for p in self.ref.deps[t])
                )
                assert runnable == (t in st_.ready), t
            if len(st_.running) < self.mc:
                assert not st_.ready
            # longest remaining path first (then priority, then plan order)
            for s, _ in d.sends:
                for r in st_.ready:
                    assert self.ref.key[s] < self.ref.key[r], (s, r)
        assert d.all_terminal == self._everything_terminal()
        if d.all_terminal:
            self.terminal_seen = True
        self._persist()

    def run(self, data: st.DataObject, *, halt_at: int | None = None) -> None:
        # One drawn seed orders the whole delivery: a draw per step would make Hypothesis's own
        # bookkeeping (its draw-time health check sums a list per draw) quadratic in the steps.
        rng = random.Random(data.draw(st.integers(0, 2**32 - 1), label="delivery order"))
        step = 0
        while self.in_flight:
            if halt_at is not None and step == halt_at and not self.halted:
                before_running = dict(self.state.running)
                d = scheduler.halt(self.spec, self.state, "cancelled")
                self.halted = True
                assert d.sends == []
                assert self.state.running == before_running  # running tasks finish on their own
                never_started = set(self.ref.order) - set(self.sent) - set(self.skipped)
                assert self.state.cancelled >= never_started - self.failed
                assert not self.state.ready
                assert d.all_terminal == self._everything_terminal()
                self._persist()
            step += 1
            if self.delivered and rng.randrange(4) == 0:  # a duplicate of an old message
                self.redeliver(rng.randrange(len(self.delivered)))
                continue
            self.finish(rng.choice(sorted(self.in_flight)))


# --- properties ----------------------------------------------------------------------------------
@SETTINGS
@given(plan=plans(), data=st.data())
def test_every_task_runs_once_in_dependency_order_within_the_window(plan, data):
    tasks, mc = plan
    sim = Sim(tasks, mc)
    sim.start()
    sim.run(data)
    assert sim.sent == {t.id: 1 for t in tasks}
    assert sim.done == {t.id for t in tasks}
    assert sim.state.done == sim.done
    assert sim.terminal_seen
    # once everything is done, more duplicates change nothing and still say "all terminal"
    again = scheduler.start(sim.spec, sim.state, mc)
    assert again.duplicate and again.all_terminal


@SETTINGS
@given(plan=plans(), data=st.data())
def test_all_terminal_only_at_the_very_end(plan, data):
    tasks, mc = plan
    sim = Sim(tasks, mc)
    rng = random.Random(data.draw(st.integers(0, 2**32 - 1), label="finish order"))
    flags = [sim.start().all_terminal]
    while sim.in_flight:
        flags.append(sim.finish(rng.choice(sorted(sim.in_flight))).all_terminal)
    assert flags[-1] is True
    assert not any(flags[:-1])


@SETTINGS
@given(plan=plans(), data=st.data())
def test_failures_skip_exactly_their_transitive_dependents(plan, data):
    tasks, mc = plan
    ids = [t.id for t in tasks]
    failing = data.draw(st.sets(st.sampled_from(ids), max_size=max(1, len(ids) // 4)), label="failing")
    sim = Sim(tasks, mc, failing)
    sim.start()
    sim.run(data)
    expected_skipped = sim.ref.descendants(failing)
    assert set(sim.skipped) == expected_skipped
    assert sim.failed == failing - expected_skipped
    assert sim.done == set(ids) - failing - expected_skipped  # independent branches went on
    assert sim.sent == {t: 1 for t in set(ids) - expected_skipped}
    assert sim.state.skipped == expected_skipped and sim.state.failed == sim.failed
    assert sim.terminal_seen


@SETTINGS
@given(plan=plans(), data=st.data())
def test_halt_starts_nothing_more(plan, data):
    tasks, mc = plan
    sim = Sim(tasks, mc)
    sim.start()
    halt_at = data.draw(st.integers(0, len(tasks)), label="halt_at")
    sim.run(data, halt_at=halt_at)
    if not sim.halted:  # the run ended before the halt point
        d = scheduler.halt(sim.spec, sim.state, "cancelled")
        assert d.sends == [] and d.all_terminal
        return
    assert sim.terminal_seen
    assert sim.state.halted == "cancelled"
    assert sim.state.cancelled == set(sim.ref.order) - sim.done
    # after a halt even a repeated start sends nothing
    assert scheduler.start(sim.spec, sim.state, mc).sends == []


@SETTINGS
@given(plan=plans(max_tasks=30), data=st.data())
def test_retry_reopens_a_failed_task_and_its_skipped_dependents(plan, data):
    tasks, mc = plan
    ids = [t.id for t in tasks]
    failing = data.draw(st.sets(st.sampled_from(ids), min_size=1, max_size=max(1, len(ids) // 3)))
    sim = Sim(tasks, mc, failing)
    sim.start()
    sim.run(data)
    assert sim.terminal_seen
    target = data.draw(st.sampled_from(sorted(sim.failed)), label="retried")

    reopened = scheduler.retry(sim.spec, sim.state, target, mc)
    still_failed = sim.failed - {target}
    blocked = sim.ref.descendants(still_failed)  # still cannot run: another failure is upstream
    assert set(reopened) == ({target} | sim.ref.descendants([target])) - blocked
    assert reopened[0] == target

    # run the reopened part to the end, this time without failures
    sim.failing = set()
    for t in reopened:
        sim.sent.pop(t, None)
        sim.failed.discard(t)
        sim.skipped.pop(t, None)
    sim.next_attempt[target] = 2
    # Reports from before the retry are not redelivered here: the scheduler cannot tell attempts
    # apart, so the dispatcher must drop stale ones (see tests/integration/test_handlers.py).
    sim.delivered = []
    sim.terminal_seen = False
    d = scheduler.fill(sim.spec, sim.state, mc)
    sim._check(d)
    assert (target, 2) in d.sends  # nothing else was running: the retried task starts at once
    sim.run(data)
    assert sim.terminal_seen, "the build never reached an end after the retry"
    assert set(reopened) <= sim.done
    assert sim.state.skipped == blocked
    assert sim.state.failed == still_failed


# --- examples ------------------------------------------------------------------------------------
def _spec(*tasks: dict) -> tuple[scheduler.DagSpec, scheduler.DispatchState]:
    return scheduler.DagSpec.from_tasks([Task.model_validate(t) for t in tasks]), scheduler.DispatchState()


def test_longest_remaining_path_starts_first():
    spec, state = _spec(task("short", duration=30), task("head", duration=5), task("tail", "head", duration=40))
    assert scheduler.start(spec, state, 1).sends == [("head", 1)]  # 5 + 40 beats 30


def test_ties_go_to_lower_priority_then_plan_order():
    spec, state = _spec(
        task("a", duration=10, priority=3), task("b", duration=10, priority=1), task("c", duration=10, priority=3)
    )
    assert scheduler.start(spec, state, 1).sends == [("b", 1)]
    assert scheduler.task_succeeded(spec, state, "b", 1).sends == [("a", 1)]
    assert scheduler.task_succeeded(spec, state, "a", 1).sends == [("c", 1)]


def test_a_child_waits_for_every_parent():
    spec, state = _spec(task("a"), task("b"), task("c", "a", "b"))
    assert sorted(scheduler.start(spec, state, 5).sends) == [("a", 1), ("b", 1)]
    assert scheduler.task_succeeded(spec, state, "a", 5).sends == []
    assert scheduler.task_succeeded(spec, state, "b", 5).sends == [("c", 1)]
    d = scheduler.task_succeeded(spec, state, "c", 5)
    assert d.all_terminal and not d.sends


def test_a_ready_task_waits_for_a_free_slot_not_for_its_level():
    # "b2" depends only on the fast "a"; it must not wait for the slow sibling "b"
    spec, state = _spec(task("a", duration=1), task("b", duration=50), task("b2", "a", duration=1))
    assert sorted(scheduler.start(spec, state, 2).sends) == [("a", 1), ("b", 1)]
    assert scheduler.task_succeeded(spec, state, "a", 2).sends == [("b2", 1)]


def test_duplicate_finished_repeats_the_last_sends_and_changes_nothing():
    spec, state = _spec(task("a"), task("b", "a"), task("c", "a"))
    scheduler.start(spec, state, 5)
    first = scheduler.task_succeeded(spec, state, "a", 5)
    snapshot = state.to_json(spec.order)
    again = scheduler.task_succeeded(spec, state, "a", 5)
    assert again.duplicate and sorted(again.sends) == sorted(first.sends)
    assert state.to_json(spec.order) == snapshot


def test_unknown_task_is_ignored():
    spec, state = _spec(task("a"))
    scheduler.start(spec, state, 1)
    snapshot = state.to_json(spec.order)
    assert scheduler.task_succeeded(spec, state, "ghost", 1).duplicate
    assert scheduler.task_failed(spec, state, "ghost", 1).duplicate
    assert state.to_json(spec.order) == snapshot


def test_failure_names_the_failed_dependency_for_every_skipped_task():
    spec, state = _spec(task("a"), task("b", "a"), task("c", "b"), task("d"))
    scheduler.start(spec, state, 5)
    d = scheduler.task_failed(spec, state, "a", 5)
    assert sorted(d.skipped) == [("b", "a"), ("c", "a")]
    assert not d.all_terminal  # "d" still runs
    assert scheduler.task_succeeded(spec, state, "d", 5).all_terminal


def test_dispatch_state_json_round_trip():
    state = scheduler.DispatchState(
        done={"a"},
        failed={"b"},
        skipped={"c"},
        cancelled={"x"},
        ready={"d"},
        running={"e": 2},
        attempts={"e": 2, "a": 1},
        cost_usd=0.125,
        halted="budget_exceeded",
        last_sends=[("e", 2)],
        started=True,
    )
    order = ["a", "b", "c", "x", "d", "e"]
    assert scheduler.DispatchState.from_json(state.to_json(order), order) == state
    assert scheduler.DispatchState.from_json(None, order) == scheduler.DispatchState()
    assert scheduler.DispatchState.from_json("", order) == scheduler.DispatchState()


def test_dispatch_state_written_by_id_is_still_read():
    # the stored form before tasks were written as indexes: builds in flight across an upgrade
    old = ('{"done":["a"],"failed":[],"skipped":[],"cancelled":[],"ready":["b"],"running":{"c":2},'
           '"attempts":{"a":1,"c":2},"cost":0.5,"halted":null,"lastSends":[["c",2]],"started":true}')
    state = scheduler.DispatchState.from_json(old, ["a", "b", "c"])
    assert state.done == {"a"} and state.ready == {"b"} and state.running == {"c": 2}
    assert state.attempts == {"a": 1, "c": 2} and state.last_sends == [("c", 2)] and state.started


def test_dispatch_state_read_with_another_plan_is_refused():
    state = scheduler.DispatchState(done={"a"}, started=True)
    with pytest.raises(ValueError, match="plan of 2 tasks"):
        scheduler.DispatchState.from_json(state.to_json(["a", "b"]), ["a", "b", "c"])


def test_dispatch_state_of_a_plan_at_the_limit_stays_small_whatever_its_ids():
    """MAX_PLAN_TASKS tasks with 64-character ids, each in the largest state it can hold at once:
    all done but for a full window running (attempt 10), every attempt counted."""
    from shared.models.plan import MAX_PLAN_TASKS, MAX_TASK_ID_LENGTH

    order = [f"{i:04d}-".ljust(MAX_TASK_ID_LENGTH, "x") for i in range(MAX_PLAN_TASKS)]
    assert {len(t) for t in order} == {MAX_TASK_ID_LENGTH}
    state = scheduler.DispatchState(
        done=set(order[20:]),
        running={t: 10 for t in order[:20]},
        attempts={t: 10 for t in order},
        last_sends=[(t, 10) for t in order[:20]],
        cost_usd=123.456789,
        started=True,
    )
    raw = state.to_json(order)
    assert len(raw.encode()) < 10 * 1024  # by id it would be ~140 KB
    assert scheduler.DispatchState.from_json(raw, order) == state


@SETTINGS
@given(plans(max_tasks=30), st.randoms(use_true_random=False))
def test_dispatch_state_round_trips_any_state_of_a_run(plan: tuple[list[Task], int], rnd) -> None:
    tasks, mc = plan
    spec, state = scheduler.DagSpec.from_tasks(tasks), scheduler.DispatchState()
    scheduler.start(spec, state, mc)
    while state.running:
        t = rnd.choice(sorted(state.running))
        (scheduler.task_succeeded if rnd.random() < 0.8 else scheduler.task_failed)(spec, state, t, mc)
        assert scheduler.DispatchState.from_json(state.to_json(spec.order), spec.order) == state


def test_retry_of_a_failed_task_sends_its_next_attempt_and_reopens_skipped_children():
    spec, state = _spec(task("a"), task("b", "a"), task("c", "b"))
    scheduler.start(spec, state, 5)
    scheduler.task_failed(spec, state, "a", 5)
    assert state.skipped == {"b", "c"}
    assert scheduler.retry(spec, state, "a", 5) == ["a", "b", "c"]
    assert scheduler.fill(spec, state, 5).sends == [("a", 2)]
    assert scheduler.task_succeeded(spec, state, "a", 5).sends == [("b", 1)]
    assert scheduler.task_succeeded(spec, state, "b", 5).sends == [("c", 1)]
    assert scheduler.task_succeeded(spec, state, "c", 5).all_terminal


def test_retry_leaves_a_dependent_of_another_failure_skipped():
    # "c" needs both "a" and "b"; both failed. Retrying "a" alone can never make "c" runnable, so
    # "c" must stay skipped — otherwise the build waits forever for a task that cannot start.
    spec, state = _spec(task("a"), task("b"), task("c", "a", "b"))
    scheduler.start(spec, state, 5)
    scheduler.task_failed(spec, state, "a", 5)
    scheduler.task_failed(spec, state, "b", 5)
    assert scheduler.retry(spec, state, "a", 5) == ["a"]
    assert scheduler.fill(spec, state, 5).sends == [("a", 2)]
    assert scheduler.task_succeeded(spec, state, "a", 5).all_terminal
    assert state.skipped == {"c"}


@pytest.mark.parametrize("reason", ["cancelled", "timed_out", "budget_exceeded"])
def test_halt_before_anything_finishes_cancels_the_rest(reason):
    spec, state = _spec(task("a"), task("b", "a"), task("c"))
    scheduler.start(spec, state, 1)  # only one of a / c is running
    running = set(state.running)
    d = scheduler.halt(spec, state, reason)
    assert not d.all_terminal and not d.sends
    assert state.cancelled == {"a", "b", "c"} - running
    last = scheduler.task_succeeded(spec, state, running.pop(), 1)
    assert last.sends == [] and last.all_terminal
    assert state.halted == reason


def test_retry_after_a_halt_reopens_the_tasks_the_halt_cancelled():
    """A timed-out (or budget-halted) build can still complete: retrying re-opens what never ran."""
    spec, state = _spec(task("a"), task("b", "a"), task("c"))
    scheduler.start(spec, state, 1)  # "a" runs ("c" waits for the slot)
    scheduler.halt(spec, state, "timed_out")
    assert state.cancelled == {"b", "c"}
    assert scheduler.task_succeeded(spec, state, "a", 1).all_terminal
    assert sorted(scheduler.retry(spec, state, "c", 1)) == ["b", "c"]
    assert state.halted is None and not state.cancelled
    assert scheduler.fill(spec, state, 2).sends == [("b", 1), ("c", 1)]


def test_skip_counts_the_failed_task_as_settled_for_its_dependents():
    spec, state = _spec(task("a"), task("b", "a"), task("c", "b"), task("d"))
    scheduler.start(spec, state, 5)
    scheduler.task_failed(spec, state, "a", 5)
    scheduler.task_succeeded(spec, state, "d", 5)
    assert state.skipped == {"b", "c"} and scheduler.all_terminal(spec, state)
    assert scheduler.skip(spec, state, "d", 5) is None  # only a failed task can be skipped
    assert scheduler.skip(spec, state, "a", 5) == ["b", "c"]
    assert scheduler.fill(spec, state, 5).sends == [("b", 1)]  # "a" never runs again
    assert scheduler.task_succeeded(spec, state, "b", 5).sends == [("c", 1)]
    assert scheduler.task_succeeded(spec, state, "c", 5).all_terminal
    assert "a" in state.done and not state.failed
