"""Starting tasks while the plan streams: which streamed task may be handed to the dispatch state,
the ladder leaving handed tasks alone, the Execute step continuing from the handed state, and a
property: for random plans streamed in random chunkings, with completions arriving at random moments,
no task starts before every dependency the stored plan gives it has completed, and every task runs
exactly once."""

from __future__ import annotations

import json
import random
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.logic.readiness import scheduler
from shared.logic.readiness.plan_validation import FieldClipper, validate_plan
from shared.logic.readiness.stream_start import StreamGate, handed_op, migrate
from shared.models.plan import Task
from shared.providers.base import MalformedTask
from shared.providers.streaming import PlanStreamParser
from tests.helpers import task


def _ids(tasks: list[Task]) -> list[str]:
    return [t.id for t in tasks]


def test_a_root_is_handed_the_moment_it_arrives():
    gate = StreamGate()
    assert _ids(gate.offer(task("a"))) == ["a"]
    assert _ids(gate.offer(task("b", "a"))) == ["b"]  # its dependency is handed: the dispatcher starts it


def test_a_task_naming_a_later_task_waits_until_that_one_has_streamed():
    gate = StreamGate()
    assert gate.offer(task("c", "d")) == []
    assert _ids(gate.offer(task("e", "c"))) == []  # waits on c, which waits
    assert _ids(gate.offer(task("d"))) == ["d", "c", "e"]
    assert gate.fixed() == {"d": [], "c": ["d"], "e": ["c"]}


def test_writers_of_one_path_are_handed_after_every_earlier_writer_of_it():
    gate = StreamGate()
    gate.offer(task("late", "ghost", target="x.txt"))  # waits on a task that never streams
    assert gate.offer(task("second", target="x.txt")) == []  # after `late`, in plan order
    assert _ids(gate.offer(task("other", target="y.txt"))) == ["other"]
    gate2 = StreamGate()
    gate2.offer(task("first", target="x.txt"))
    assert [t.dependencies for t in gate2.offer(task("second", target="x.txt"))] == [["first"]]


def test_an_invalid_task_ends_the_handing_and_duplicates_wait_for_the_plan():
    gate = StreamGate()
    assert _ids(gate.offer(task("a"))) == ["a"]
    assert gate.offer(task("a")) == []  # renamed a-2 by the plan
    assert gate.offer(task("a-2")) == []  # renamed again by the plan: not the task it names
    assert "a-2" in gate.seen
    assert gate.offer(MalformedTask(raw="{", error="bad")) == []
    assert gate.offer(task("b")) == [] and gate.closed
    invalid = StreamGate()
    invalid.offer({"id": "x"})  # not a task: healed or dropped at the end
    assert invalid.offer(task("y")) == []


def test_a_long_plan_hands_its_first_tasks_and_the_rest_waits_for_its_end():
    gate = StreamGate(limit=2)
    handed = [t for i in range(4) for t in gate.offer(task(f"t{i}"))]
    assert _ids(handed) == ["t0", "t1"] and gate.closed


def test_nothing_is_handed_when_streaming_execution_is_off():
    assert StreamGate(enabled=False).offer(task("a")) == []


def test_a_cycle_among_unstarted_tasks_goes_down_the_ladder_and_the_handed_keep_their_dependencies():
    items = [task("c", target="c.txt"), task("d", "c", target="d.txt"), task("a", "b"), task("b", "a")]
    gate = StreamGate()
    for item in items:
        gate.offer(item)
    assert _ids(gate.handed) == ["c", "d"]
    healed_with_changes = json.dumps({"tasks": [{"id": "a", "dependencies": []}, {"id": "b", "dependencies": ["a"]},
                                                {"id": "c", "dependencies": ["d"]}, {"id": "d", "dependencies": []}]})
    plan = validate_plan(items, lambda *a: healed_with_changes, allow_linear=True, approval_required=False,
                         fixed=gate.fixed())
    deps = {t.id: t.dependencies for t in plan.tasks}
    assert plan.recovery is not None and plan.recovery.value == "llm-healed"  # rung B, for a and b only
    assert deps == {"c": [], "d": ["c"], "a": [], "b": ["a"]}
    linear = validate_plan(items, None, allow_linear=True, approval_required=False, fixed=gate.fixed())
    deps = {t.id: t.dependencies for t in linear.tasks}
    assert linear.recovery is not None and linear.recovery.value == "linear-fallback"  # rung C
    assert deps["c"] == [] and deps["d"] == ["c"]  # untouched
    assert sorted(deps["a"]) == ["c", "d"] and deps["b"] == ["a"]  # one by one, after the started ones


def test_execute_continues_from_the_handed_state():
    plan = [Task.model_validate(t) for t in (task("a"), task("b", "a"), task("c"), task("d", "c"), task("e"))]
    handed = ("a", "c")
    state = scheduler.DispatchState(done={"a"}, failed={"c"}, running={}, attempts={"a": 1, "c": 3})
    spec = scheduler.DagSpec.from_tasks(plan)
    moved = migrate(state.to_json(handed), handed, spec)
    decision = scheduler.start(spec, moved, 5)
    assert sorted(t for t, _ in decision.sends) == ["b", "e"]  # a's dependent and the new root
    assert decision.skipped == [("d", "c")]  # c failed while the plan streamed
    assert moved.attempts["a"] == 1 and "a" in moved.done
    halted = scheduler.DispatchState(running={"a": 1}, halted="planning_failed")
    moved = migrate(halted.to_json(handed), handed, spec)
    decision = scheduler.start(spec, moved, 5)
    assert decision.sends == [] and moved.cancelled == {"b", "c", "d", "e"} and moved.running == {"a": 1}


# --- the property --------------------------------------------------------------------------------
@st.composite
def streamed_builds(draw: Any) -> dict[str, Any]:
    n = draw(st.integers(1, 7))
    ids = [f"t{i}" for i in range(n)]
    tasks = []
    for i in range(n):
        later = ids[i + 1 :] or ids  # a dependency that has not streamed yet makes a task wait
        deps = draw(st.lists(st.sampled_from([*ids, *later, "ghost"]), max_size=2, unique=True))
        target = draw(st.sampled_from([None, "x.txt", "x.txt", "y.txt"]))
        task_id = ids[i] if draw(st.integers(0, 9)) != 0 or i == 0 else ids[i - 1]  # sometimes a duplicate id
        tasks.append(task(task_id, *deps, target=target, priority=draw(st.integers(1, 3))))
    text = json.dumps({"tasks": tasks})
    return {
        "text": text,
        "cuts": draw(st.lists(st.integers(1, 60), min_size=1, max_size=40)),
        "seed": draw(st.integers(0, 2**16)),
        "max_concurrency": draw(st.integers(1, 3)),
    }


class Sim:
    """The dispatch state as the plan step, the dispatcher and the Execute step change it, stored
    and read back as they do (to_json / from_json), with completions at random moments."""

    def __init__(self, max_concurrency: int, rng: random.Random) -> None:
        self.m = max_concurrency
        self.rng = rng
        self.spec = scheduler.DagSpec.from_tasks([])
        self.raw = scheduler.DispatchState().to_json(())
        self.starts: list[tuple[str, frozenset[str]]] = []  # (task, what was done when it started)

    def step(self, op: Any, spec: scheduler.DagSpec | None = None, old_order: tuple[str, ...] | None = None) -> None:
        state = scheduler.DispatchState.from_json(self.raw, old_order if old_order is not None else self.spec.order)
        self.spec = spec or self.spec
        decision = op(self.spec, state, self.m)
        for t, _ in decision.sends:
            self.starts.append((t, frozenset(state.done)))
        self.raw = state.to_json(self.spec.order)

    def state(self) -> scheduler.DispatchState:
        return scheduler.DispatchState.from_json(self.raw, self.spec.order)

    def complete_some(self, most: int) -> None:
        for _ in range(self.rng.randint(0, most)):
            running = sorted(self.state().running)
            if not running:
                return
            done = self.rng.choice(running)
            self.step(lambda spec, s, m, t=done: scheduler.task_succeeded(spec, s, t, m))


PROPERTY = settings(max_examples=80, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])


@PROPERTY
@given(build=streamed_builds())
def test_streamed_tasks_start_only_after_their_dependencies_and_each_runs_exactly_once(build):
    rng = random.Random(build["seed"])
    sim = Sim(build["max_concurrency"], rng)
    clipper = FieldClipper()
    gate = StreamGate(clipper)
    parser = PlanStreamParser()
    items: list[Any] = []
    text, at = build["text"], 0
    cuts = iter(build["cuts"])

    def arrive(raw: Any) -> None:
        item = clipper.clip(raw)
        items.append(item)
        new = gate.offer(item)
        if new:
            old = sim.spec.order
            sim.step(handed_op([t.id for t in new]), scheduler.DagSpec.from_tasks(gate.handed), old)
        sim.complete_some(2)

    while at < len(text):
        size = next(cuts, 40)
        for raw in parser.feed(text[at : at + size]):
            arrive(raw)
        at += size
        sim.complete_some(1)
    for raw in parser.close():
        arrive(raw)

    plan = validate_plan(items, None, allow_linear=True, approval_required=False, clipper=clipper,
                         fixed=gate.fixed() or None)
    final = scheduler.DagSpec.from_tasks(plan.tasks)
    moved = migrate(sim.raw, sim.spec.order, final)
    sim.spec, sim.raw = final, moved.to_json(final.order)
    sim.step(scheduler.start)
    for _ in range(100):
        if not sim.state().running:
            break
        sim.complete_some(3)
    deps = {t.id: set(t.dependencies) for t in plan.tasks}
    started = [t for t, _ in sim.starts]
    assert sorted(started) == sorted(deps), "every task of the stored plan runs exactly once"
    for t, done in sim.starts:
        assert deps[t] <= done, f"{t} started before {sorted(deps[t] - done)} completed"
    assert sim.state().done == set(deps)
