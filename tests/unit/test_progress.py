"""What `stepwise build` draws from events: a big plan's rows come from the whole plan (the API),
not from the prefix its `plan_generated` carries; and what the local outbox relay sends per batch."""

from __future__ import annotations

import io

from rich.console import Console

from local.pollers import MAX_MESSAGE_BYTES, batches
from local.progress import BuildProgress
from shared.models.events import Event, EventType


def _generated(tasks: list[dict], **extra: object) -> Event:
    data = {"planId": "p", "taskCount": 3, "estimatedDuration": 1.0, "recovery": None, "tasks": tasks, **extra}
    return Event(id="evt_1", type=EventType.plan_generated, buildId="bld_1", seq=2, timestamp=1, data=data)


def _task(i: int) -> dict:
    return {"id": f"t{i}", "name": f"Task {i}", "type": "create_file", "description": "", "dependsOn": []}


def test_a_truncated_plan_generated_draws_a_row_for_every_task_of_the_plan():
    whole = [_task(0), _task(1), _task(2)]
    loads: list[int] = []
    view = BuildProgress(Console(file=io.StringIO()), "bld_1", "p", plan_loader=lambda: loads.append(1) or whole)
    view.on_event(_generated(whole[:1], truncated=True, tasksOmitted=2))
    assert set(view.rows) == {"t0", "t1", "t2"} and loads == [1]
    complete = BuildProgress(Console(file=io.StringIO()), "bld_2", "p", plan_loader=lambda: loads.append(2) or whole)
    complete.on_event(_generated(whole))
    assert set(complete.rows) == {"t0", "t1", "t2"} and loads == [1]  # whole already: nothing to read


def test_relay_batches_keep_to_ten_messages_and_the_size_limit_in_order():
    bodies = ["x" * 100_000, "y" * 100_000, "z" * 100_000] + ["s"] * 25
    groups = batches(bodies)
    assert [b for g in groups for b in g] == bodies
    assert all(len(g) <= 10 and sum(len(b) for b in g) <= MAX_MESSAGE_BYTES for g in groups)
    assert [len(g) for g in groups] == [2, 10, 10, 6]


def test_a_task_started_before_plan_generated_has_its_row_and_keeps_its_state():
    """With streaming execution a task may start, and even complete, before the plan is stored."""
    out = io.StringIO()
    view = BuildProgress(Console(file=out, width=120), "bld_3", "p")

    def event(seq: int, kind: EventType, data: dict) -> Event:
        return Event(id=f"evt_{seq}", type=kind, buildId="bld_3", seq=seq, timestamp=seq, data=data)

    view.on_event(event(2, EventType.task_started, {"taskId": "t0", "taskName": "Task 0", "description": "",
                                                     "attempt": 1}))
    view.on_event(event(3, EventType.task_completed, {"taskId": "t0", "taskName": "Task 0", "filesCreated": 1,
                                                       "files": ["a.txt"], "cached": False, "durationMs": 5,
                                                       "usage": {}}))
    view.on_event(_generated([_task(0), _task(1)]))
    assert list(view.rows) == ["t0", "t1"]
    assert view.progress.tasks[view.rows["t0"]].finished  # plan_generated did not reset it
    assert not view.progress.tasks[view.rows["t1"]].finished
