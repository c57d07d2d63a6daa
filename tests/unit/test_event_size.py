"""Every event keeps to its size bound: the lists that grow with a plan are cut to a prefix that
fits, marked `truncated` with the count left out; everything else passes unchanged."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from shared.models.events import MAX_DATA_BYTES, EventType, bounded, event_data, json_size


def _task(i: int, description: str = "") -> dict:
    return {"id": f"t{i}", "name": f"Task {i}", "type": "create_file", "description": description, "estimatedDuration": 10, "dependsOn": []}


def _generated(tasks: list[dict]) -> dict:
    return {"planId": "p", "taskCount": len(tasks), "estimatedDuration": 3.0, "recovery": None, "tasks": tasks}


def test_a_small_event_is_unchanged_and_not_marked():
    data = event_data(EventType.plan_generated, _generated([_task(0), _task(1)]))
    assert "truncated" not in data and "tasksOmitted" not in data and len(data["tasks"]) == 2


def test_a_big_plan_generated_keeps_a_prefix_of_whole_tasks_and_says_how_many_are_left_out():
    tasks = [_task(i, "é" * 2000) for i in range(1000)]  # non-ASCII: measured as escaped JSON
    data = event_data(EventType.plan_generated, _generated(tasks))
    kept = len(data["tasks"])
    assert 0 < kept < 1000 and data["truncated"] is True and data["tasksOmitted"] == 1000 - kept
    assert data["tasks"] == tasks[:kept] and data["taskCount"] == 1000
    assert json_size(data) <= MAX_DATA_BYTES < json_size({**data, "tasks": tasks[: kept + 1]})


def test_build_completed_cuts_its_files_and_keeps_its_metrics():
    files = [f"src/{'deep/' * 30}file-{i}.ts" for i in range(2000)]
    data = event_data(EventType.build_completed, {"status": "completed", "metrics": {"totalTasks": 1000}, "files": files})
    assert data["truncated"] is True and data["files"] == files[: len(data["files"])]
    assert data["filesOmitted"] == 2000 - len(data["files"]) and data["metrics"] == {"totalTasks": 1000}


@settings(max_examples=80, deadline=None)
@given(
    sizes=st.lists(st.integers(0, 20_000), max_size=60),
    budget=st.integers(200, 40_000),
)
def test_any_list_is_cut_to_the_longest_prefix_that_fits(sizes: list[int], budget: int) -> None:
    files = [f"{i}-" + "x" * n for i, n in enumerate(sizes)]
    data = {"status": "completed", "metrics": {}, "files": files}
    out = bounded(EventType.build_completed, data, budget)
    if json_size(data) <= budget:
        assert out is data
        return
    kept = out["files"]
    assert kept == files[: len(kept)] and out["filesOmitted"] == len(files) - len(kept) and out["truncated"]
    assert json_size(out) <= budget
    if len(kept) < len(files):  # one more would not have fitted (the count may have a digit less)
        assert json_size({**out, "files": files[: len(kept) + 1]}) > budget - len(str(len(files)))
    assert json.loads(json.dumps(out)) == out
