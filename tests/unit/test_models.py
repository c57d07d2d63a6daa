"""Boundary models against the reference: request limits (docs/api.md#request-rules), event data (docs/api.md#events),
tasks (docs/plans.md#a-task)."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from shared.models.build import (
    RELATIVE_PATH_PATTERN,
    ApprovalRequest,
    BuildMetrics,
    BuildStatus,
    CreateBuildRequest,
    InputFile,
)
from shared.models.events import EVENT_DATA, Event, EventType, event_data
from shared.models.plan import MAX_PATH_LENGTH, Task, TaskStatus, TaskType, safe_relative_path
from tests.helpers import task

# docs/api.md#events, copied: event type -> data fields.
CONTRACT_EVENTS = {
    "build_started": {"prompt", "framework"},
    "plan_partial": {"planId", "totalTasksSoFar", "latestTasks"},
    "plan_warning": {"planId", "warning", "message", "cycles"},
    "plan_blocked": {"planId", "reason", "message", "cycles", "cycleTasks", "edges"},
    "plan_generated": {"planId", "planVersion", "taskCount", "estimatedDuration", "recovery", "tasks"},
    "plan_approval_required": {"planId", "expiresAt", "taskCount", "estimatedDuration", "approvalUrl"},
    "plan_approved": {"planId", "planVersion", "edited"},
    "plan_rejected": {"planId", "reason"},
    "build_resumed": {"runId", "taskIds"},
    "task_started": {"taskId", "taskName", "description", "attempt"},
    "task_completed": {"taskId", "taskName", "filesCreated", "files", "cached", "durationMs", "usage"},
    "task_failed": {"taskId", "taskName", "error", "attempt", "willRetry"},
    "task_timeout": {"taskId", "taskName", "attempt", "willRetry", "suggestion"},
    "task_skipped": {"taskId", "reason", "dependency"},
    "build_completed": {"status", "metrics", "files"},
    "build_failed": {"reason", "message"},
    "build_cancelled": {"reason"},
}
CONTRACT_NESTED = {
    ("plan_partial", "latestTasks"): {"id", "name", "type", "description", "estimatedDuration", "dependsOn"},
    ("plan_generated", "tasks"): {"id", "name", "type", "description", "estimatedDuration", "dependsOn"},
    ("task_completed", "usage"): {"promptTokens", "completionTokens", "costUsd"},
}
CONTRACT_METRICS = {
    "totalTasks",
    "completedTasks",
    "failedTasks",
    "skippedTasks",
    "cachedTasks",
    "promptTokens",
    "completionTokens",
    "costUsd",
    "planCostUsd",
    "durationMs",
}
CONTRACT_BUILD_STATUSES = {
    "planning",
    "awaiting_approval",
    "executing",
    "completed",
    "completed_with_errors",
    "failed",
    "cancelled",
    "timed_out",
}
CONTRACT_TASK_STATUSES = {"pending", "queued", "in_progress", "completed", "failed", "timeout", "skipped", "cancelled"}
CONTRACT_TASK_TYPES = {"create_file", "modify_file", "create_component", "setup_config", "install_deps"}


# --- events ---------------------------------------------------------------------------------------
def test_every_contract_event_type_has_a_data_model_and_no_more():
    assert {e.value for e in EventType} == set(CONTRACT_EVENTS)
    assert {e.value for e in EVENT_DATA} == set(CONTRACT_EVENTS)


@pytest.mark.parametrize("event_type", sorted(CONTRACT_EVENTS))
def test_event_data_fields_match_the_contract_exactly(event_type):
    model = EVENT_DATA[EventType(event_type)]
    assert set(model.model_fields) == CONTRACT_EVENTS[event_type]


@pytest.mark.parametrize(("event_type", "field"), sorted(CONTRACT_NESTED))
def test_nested_event_fields_match_the_contract(event_type, field):
    annotation = EVENT_DATA[EventType(event_type)].model_fields[field].annotation
    inner = getattr(annotation, "__args__", (annotation,))[0]
    assert issubclass(inner, BaseModel)
    assert set(inner.model_fields) == CONTRACT_NESTED[(event_type, field)]


def test_fixed_values_in_event_data():
    assert (
        event_data(EventType.task_timeout, {"taskId": "a", "taskName": "A", "attempt": 1, "willRetry": True})[
            "suggestion"
        ]
        == "Retry or skip this task"
    )
    assert event_data(EventType.task_skipped, {"taskId": "b", "dependency": "a"})["reason"] == "dependency_failed"
    blocked = {"planId": "p", "message": "m", "cycles": ["a → b → a"]}
    assert event_data(EventType.plan_blocked, blocked)["reason"] == "circular_dependencies"


def test_event_data_missing_a_field_is_refused():
    with pytest.raises(ValidationError):
        event_data(EventType.task_skipped, {"taskId": "b"})
    with pytest.raises(ValidationError):
        event_data(
            EventType.task_completed,
            {"taskId": "a", "taskName": "A", "filesCreated": 1, "files": ["x"], "cached": False, "durationMs": 3},
        )  # no usage


def test_event_data_is_plain_json():
    data = event_data(
        EventType.plan_generated,
        {
            "planId": "pln_1",
            "taskCount": 1,
            "estimatedDuration": 12.5,
            "recovery": None,
            "tasks": [{"id": "a", "name": "A", "type": "create_file", "description": "", "estimatedDuration": 12.5, "dependsOn": []}],
        },
    )
    assert json.loads(json.dumps(data)) == data
    assert data["tasks"][0]["dependsOn"] == []


def test_envelope_fields_and_seq_starting_at_one():
    assert set(Event.model_fields) == {"id", "type", "buildId", "seq", "timestamp", "data"}
    Event(id="evt_1", type="build_started", buildId="bld_1", seq=1, timestamp=1, data={})
    with pytest.raises(ValidationError):
        Event(id="evt_1", type="build_started", buildId="bld_1", seq=0, timestamp=1, data={})
    with pytest.raises(ValidationError):
        Event(id="evt_1", type="build_exploded", buildId="bld_1", seq=1, timestamp=1, data={})


def test_statuses_types_and_metrics_match_the_contract():
    assert {s.value for s in BuildStatus} == CONTRACT_BUILD_STATUSES
    assert {s.value for s in TaskStatus} == CONTRACT_TASK_STATUSES
    assert {t.value for t in TaskType} == CONTRACT_TASK_TYPES
    assert set(BuildMetrics.model_fields) == CONTRACT_METRICS


# --- POST /builds body -----------------------------------------------------------------------------
def _errors(**body) -> set[str]:
    try:
        CreateBuildRequest.model_validate({"prompt": "Build a landing page", **body})
    except ValidationError as exc:
        return {str(e["loc"][0]) if e["loc"] else "" for e in exc.errors()}
    return set()


def test_minimal_request_and_defaults():
    req = CreateBuildRequest.model_validate({"prompt": "x"})
    assert req.maxConcurrency == 5
    assert req.files == [] and req.budgetUsd is None and req.requireApproval is None


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"prompt": ""}, "prompt"),
        ({"prompt": "p" * 20_001}, "prompt"),
        ({"maxConcurrency": 0}, "maxConcurrency"),
        ({"maxConcurrency": 21}, "maxConcurrency"),
        ({"maxConcurrency": 50}, "maxConcurrency"),
        ({"budgetUsd": 0}, "budgetUsd"),
        ({"budgetUsd": -1}, "budgetUsd"),
        ({"budgetUsd": float("nan")}, "budgetUsd"),
        ({"budgetUsd": float("inf")}, "budgetUsd"),
        ({"framework": "f" * 51}, "framework"),
        ({"files": [{"path": "/etc/passwd", "content": ""}]}, "files"),
        ({"files": [{"path": "../up.txt", "content": ""}]}, "files"),
        ({"files": [{"path": "a\\b.txt", "content": ""}]}, "files"),
        ({"files": [{"path": "a.txt"}]}, "files"),
        ({"files": [{"path": "a.txt", "content": "", "mode": "755"}]}, "files"),
        ({"files": [{"path": f"f{i}.txt", "content": ""} for i in range(201)]}, "files"),
        ({"colour": "blue"}, "colour"),
    ],
)
def test_request_limits_name_the_field(body, field):
    assert field in _errors(**body)


def test_request_size_limit_counts_all_files_together():
    half = "x" * (512 * 1024)
    assert _errors(files=[{"path": "a.txt", "content": half}, {"path": "b.txt", "content": half}]) == set()
    over = [{"path": "a.txt", "content": half}, {"path": "b.txt", "content": half + "y"}]
    with pytest.raises(ValidationError, match="files"):
        CreateBuildRequest.model_validate({"prompt": "x", "files": over})


@pytest.mark.parametrize(
    "body",
    [
        {"prompt": "p" * 20_000},
        {"maxConcurrency": 1},
        {"maxConcurrency": 20},
        {"budgetUsd": 0.01},
        {"framework": "f" * 50},
        {"files": [{"path": f"src/f{i}.ts", "content": "x"} for i in range(200)]},
        {"requireApproval": True},
        {"webhookUrl": "https://hooks.example.com/x"},
    ],
)
def test_request_at_the_limits_is_accepted(body):
    assert _errors(**body) == set()


def test_input_paths_are_normalised():
    req = CreateBuildRequest.model_validate({"prompt": "x", "files": [{"path": "./src//a.ts", "content": ""}]})
    assert req.files[0].path == "src/a.ts"


def test_approval_body():
    assert ApprovalRequest.model_validate({"approved": False, "reason": "no"}).approved is False
    edited = ApprovalRequest.model_validate({"approved": True, "tasks": [task("a")]})
    assert edited.tasks is not None and edited.tasks[0].id == "a"
    with pytest.raises(ValidationError):
        ApprovalRequest.model_validate({})
    with pytest.raises(ValidationError):
        ApprovalRequest.model_validate({"approved": True, "extra": 1})


# --- tasks -------------------------------------------------------------------------------------------
def test_task_defaults_and_dependencies():
    t = Task.model_validate({"id": "a", "type": "create_file", "name": "A", "input": {"dependencies": None}})
    assert t.dependencies == [] and t.priority == 5 and t.estimatedDuration == 10.0
    assert Task.model_validate(task("b", "a")).dependencies == ["a"]


@pytest.mark.parametrize(
    "bad",
    [
        {"type": "write_poem"},
        {"id": ""},
        {"name": ""},
        {"priority": -1},
        {"estimatedDuration": -1},
        {"input": {"targetPath": "/abs"}},
        {"input": {"targetPath": "../x"}},
    ],
)
def test_invalid_task_is_refused(bad):
    data = task("a")
    data.update(bad)
    with pytest.raises(ValidationError):
        Task.model_validate(data)


# --- what the API documents is what it validates ------------------------------------------------------
@settings(max_examples=100, deadline=None, derandomize=True)
@given(path=st.from_regex(RELATIVE_PATH_PATTERN, fullmatch=True).filter(lambda p: len(p) <= MAX_PATH_LENGTH))
def test_every_path_the_document_admits_is_one_the_build_accepts(path: str) -> None:
    """The documented `files[].path` pattern is a subset of what `safe_relative_path` accepts, so a
    client following the document is never refused, and the validation enforces the pattern itself."""
    assert safe_relative_path(path)
    assert InputFile.model_validate({"path": path, "content": ""}).path == safe_relative_path(path)


@pytest.mark.parametrize("path", ["../x", "/etc/passwd", "a/../../b", ".", "a\\b", "a:b", " ", "./", "a/../", "\x85x"])
def test_paths_outside_the_pattern_are_refused(path: str) -> None:
    with pytest.raises(ValidationError):
        InputFile.model_validate({"path": path, "content": ""})


@pytest.mark.parametrize("budget", [4.9e131, 1e-300, 1_000_000.5])
def test_budgets_a_number_store_cannot_hold_are_422_not_5xx(budget: float) -> None:
    with pytest.raises(ValidationError, match="budgetUsd"):
        CreateBuildRequest.model_validate({"prompt": "x", "budgetUsd": budget})
