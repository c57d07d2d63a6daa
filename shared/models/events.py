"""Event envelope and the data of each event type (docs/api.md#events), and the size every event keeps to.

No event's JSON exceeds MAX_EVENT_BYTES, so each fits a DynamoDB item, an SQS message, an
EventBridge Pipes event and an API Gateway WebSocket message with room to spare. The lists that grow
with a plan (a plan's tasks, a build's files, cycles and edges) are cut to the prefix that fits
MAX_DATA_BYTES: the data then says `truncated: true` and how many were left out (`tasksOmitted`,
`filesOmitted`, ...), and the client reads the whole from the API (`GET /builds/{id}`, `/files`).
Sizes are measured
as `json.dumps` writes them by default (ASCII escapes, spaces after separators), the largest of the
usual encodings, so the bound holds whichever a consumer uses.
"""

from __future__ import annotations

import json
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, Field, model_validator


class EventType(StrEnum):
    build_started = "build_started"
    plan_partial = "plan_partial"
    plan_warning = "plan_warning"
    plan_blocked = "plan_blocked"
    plan_generated = "plan_generated"
    plan_approval_required = "plan_approval_required"
    plan_approved = "plan_approved"
    plan_rejected = "plan_rejected"
    build_resumed = "build_resumed"
    task_started = "task_started"
    task_completed = "task_completed"
    task_failed = "task_failed"
    task_timeout = "task_timeout"
    task_skipped = "task_skipped"
    build_completed = "build_completed"
    build_failed = "build_failed"
    build_cancelled = "build_cancelled"


TERMINAL_EVENT_TYPES = frozenset({EventType.build_completed, EventType.build_failed, EventType.build_cancelled})


class TaskSummary(BaseModel):
    id: str
    name: str
    type: str
    description: str


class PlannedTask(TaskSummary):
    estimatedDuration: float
    dependsOn: list[str]


class BuildStartedData(BaseModel):
    prompt: str
    framework: str | None


class PlanPartialData(BaseModel):
    planId: str
    totalTasksSoFar: int
    latestTasks: list[PlannedTask]


class PlanWarningData(BaseModel):
    planId: str
    warning: str
    message: str
    cycles: list[str] = Field(default_factory=list)


class PlanBlockedData(BaseModel):
    planId: str
    reason: str = "circular_dependencies"
    message: str
    cycles: list[str]
    cycleTasks: list[list[str]] = Field(default_factory=list)
    edges: list[list[str]] = Field(default_factory=list)


class PlanGeneratedData(BaseModel):
    planId: str
    planVersion: int = 1
    taskCount: int
    estimatedDuration: float
    recovery: str | None
    tasks: list[PlannedTask]


class PlanApprovalRequiredData(BaseModel):
    planId: str
    expiresAt: int
    taskCount: int
    estimatedDuration: float
    approvalUrl: str


class PlanApprovedData(BaseModel):
    planId: str
    planVersion: int
    edited: bool


class PlanRejectedData(BaseModel):
    planId: str
    reason: str


class BuildResumedData(BaseModel):
    runId: str
    taskIds: list[str]


class TaskStartedData(BaseModel):
    taskId: str
    taskName: str
    description: str
    attempt: int


class UsageData(BaseModel):
    promptTokens: int
    completionTokens: int
    costUsd: float | None


class TaskCompletedData(BaseModel):
    taskId: str
    taskName: str
    filesCreated: int
    files: list[str]
    cached: bool
    durationMs: int
    usage: UsageData


class TaskFailedData(BaseModel):
    taskId: str
    taskName: str
    error: str
    attempt: int
    willRetry: bool


class TaskTimeoutData(BaseModel):
    taskId: str
    taskName: str
    attempt: int
    willRetry: bool
    suggestion: str = "Retry or skip this task"


class TaskSkippedData(BaseModel):
    taskId: str
    reason: Literal["dependency_failed", "user"] = "dependency_failed"
    dependency: str | None = None  # the failed task, when reason is dependency_failed

    @model_validator(mode="after")
    def _names_its_dependency(self) -> TaskSkippedData:
        if self.reason == "dependency_failed" and not self.dependency:
            raise ValueError("a task skipped for a failed dependency names it")
        return self


class BuildCompletedData(BaseModel):
    status: str
    metrics: dict[str, Any]
    files: list[str]


class BuildFailedData(BaseModel):
    reason: str
    message: str


class BuildCancelledData(BaseModel):
    reason: str


EVENT_DATA: dict[EventType, type[BaseModel]] = {
    EventType.build_started: BuildStartedData,
    EventType.plan_partial: PlanPartialData,
    EventType.plan_warning: PlanWarningData,
    EventType.plan_blocked: PlanBlockedData,
    EventType.plan_generated: PlanGeneratedData,
    EventType.plan_approval_required: PlanApprovalRequiredData,
    EventType.plan_approved: PlanApprovedData,
    EventType.plan_rejected: PlanRejectedData,
    EventType.build_resumed: BuildResumedData,
    EventType.task_started: TaskStartedData,
    EventType.task_completed: TaskCompletedData,
    EventType.task_failed: TaskFailedData,
    EventType.task_timeout: TaskTimeoutData,
    EventType.task_skipped: TaskSkippedData,
    EventType.build_completed: BuildCompletedData,
    EventType.build_failed: BuildFailedData,
    EventType.build_cancelled: BuildCancelledData,
}


class Event(BaseModel):
    """The envelope: what the event log stores and what a webhook carries."""

    id: str
    type: EventType
    buildId: str
    seq: int = Field(ge=1)
    timestamp: int
    data: dict[str, Any]


MAX_EVENT_BYTES = 96 * 1024  # the event writer refuses anything bigger
# Lists are cut so that the data stays under this: with its envelope an event is then well under
# MAX_EVENT_BYTES, and even written as DynamoDB JSON (the outbox's SQS message, where one short
# string can take three times its JSON size) it stays under SQS's and Pipes' 256 KB.
MAX_DATA_BYTES = 64 * 1024

# Per event type, the lists in its data that grow with a plan, in the order they are cut, each with
# the key that then says how many of its items were left out.
BOUNDED_LISTS: dict[str, tuple[tuple[str, str], ...]] = {
    EventType.plan_generated: (("tasks", "tasksOmitted"),),
    EventType.plan_partial: (("latestTasks", "tasksOmitted"),),
    EventType.build_completed: (("files", "filesOmitted"),),
    EventType.task_completed: (("files", "filesOmitted"),),
    EventType.plan_warning: (("cycles", "cyclesOmitted"),),
    EventType.plan_blocked: (("edges", "edgesOmitted"), ("cycleTasks", "cycleTasksOmitted"), ("cycles", "cyclesOmitted")),
    "build_resumed": (("taskIds", "taskIdsOmitted"),),
}


def json_size(value: Any) -> int:
    """Bytes of `value` as JSON, measured the largest usual way (see the module docstring)."""
    return len(json.dumps(value))


def bounded(event_type: str, data: dict[str, Any], budget: int = MAX_DATA_BYTES) -> dict[str, Any]:
    """`data` itself if its JSON fits `budget`; else a copy whose growing lists are cut to the
    longest prefix that fits, with `truncated: true` and the count each one left out."""
    if json_size(data) <= budget:
        return data
    out = dict(data)
    for key, omitted_key in BOUNDED_LISTS.get(event_type, ()):
        items = out.get(key)
        if not isinstance(items, list) or not items:
            continue
        # The data without the list, with the markers at their largest: what every prefix adds to.
        base = json_size({**out, key: [], "truncated": True, omitted_key: len(items)})
        used, keep = base, 0
        for item in items:
            used += json_size(item) + (2 if keep else 0)  # ", " between items
            if used > budget:
                break
            keep += 1
        out[key] = items[:keep]
        out["truncated"] = True
        out[omitted_key] = len(items) - keep
        if json_size(out) <= budget:
            break
    return out


def event_data(event_type: EventType, data: BaseModel | dict[str, Any]) -> dict[str, Any]:
    """Validate `data` against its type's model and return the plain dict that is stored and sent,
    its growing lists cut to fit the event size bound."""
    model = EVENT_DATA[event_type]
    parsed = data if isinstance(data, model) else model.model_validate(data)
    return bounded(event_type, parsed.model_dump(mode="json"))
