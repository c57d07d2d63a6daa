"""Event envelope and the data of each event type (CONTRACT §3)."""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import BaseModel, Field


class EventType(StrEnum):
    build_started = "build_started"
    plan_partial = "plan_partial"
    plan_warning = "plan_warning"
    plan_blocked = "plan_blocked"
    plan_generated = "plan_generated"
    plan_approval_required = "plan_approval_required"
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


class BuildStartedData(BaseModel):
    prompt: str
    framework: str | None


class PlanPartialData(BaseModel):
    planId: str
    totalTasksSoFar: int
    latestTasks: list[TaskSummary]


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


class PlannedTask(TaskSummary):
    dependsOn: list[str]


class PlanGeneratedData(BaseModel):
    planId: str
    taskCount: int
    estimatedDuration: float
    recovery: str | None
    tasks: list[PlannedTask]


class PlanApprovalRequiredData(BaseModel):
    planId: str
    expiresAt: int


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
    reason: str = "dependency_failed"
    dependency: str


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


def event_data(event_type: EventType, data: BaseModel | dict[str, Any]) -> dict[str, Any]:
    """Validate `data` against its type's model and return the plain dict that is stored and sent."""
    model = EVENT_DATA[event_type]
    parsed = data if isinstance(data, model) else model.model_validate(data)
    return parsed.model_dump(mode="json")
