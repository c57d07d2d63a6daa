"""Builds and the HTTP request bodies (CONTRACT §2)."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, field_validator

from shared.models.plan import Recovery, Task, TaskStatus, safe_relative_path

MAX_INPUT_FILES = 200
MAX_INPUT_BYTES = 1024 * 1024


class BuildStatus(StrEnum):
    planning = "planning"
    awaiting_approval = "awaiting_approval"
    executing = "executing"
    completed = "completed"
    completed_with_errors = "completed_with_errors"
    failed = "failed"
    cancelled = "cancelled"
    timed_out = "timed_out"


TERMINAL_BUILD_STATUSES = frozenset(
    {
        BuildStatus.completed,
        BuildStatus.completed_with_errors,
        BuildStatus.failed,
        BuildStatus.cancelled,
        BuildStatus.timed_out,
    }
)


class FailureReason(StrEnum):
    planning_failed = "planning_failed"
    plan_too_large = "plan_too_large"
    circular_dependencies = "circular_dependencies"
    approval_rejected = "approval_rejected"
    approval_timeout = "approval_timeout"
    timed_out = "timed_out"
    budget_exceeded = "budget_exceeded"


class InputFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: Annotated[str, Field(min_length=1, max_length=255)]
    content: str

    @field_validator("path")
    @classmethod
    def _relative(cls, v: str) -> str:
        return safe_relative_path(v)


class CreateBuildRequest(BaseModel):
    """Body of `POST /builds`."""

    model_config = ConfigDict(extra="forbid")

    prompt: str = Field(min_length=1, max_length=20_000)
    framework: str | None = Field(default=None, max_length=50)
    files: list[InputFile] = Field(default_factory=list, max_length=MAX_INPUT_FILES)
    webhookUrl: str | None = Field(default=None, max_length=2048)
    requireApproval: bool | None = None
    budgetUsd: float | None = Field(default=None, gt=0, allow_inf_nan=False)  # 1e999 parses as inf
    maxConcurrency: int = Field(default=5, ge=1, le=20)

    @field_validator("files")
    @classmethod
    def _files_size(cls, files: list[InputFile]) -> list[InputFile]:
        total = sum(len(f.content.encode()) for f in files)
        if total > MAX_INPUT_BYTES:
            raise ValueError(f"{total} bytes in all, more than {MAX_INPUT_BYTES}")
        return files


class ApprovalRequest(BaseModel):
    """Body of `POST /builds/{buildId}/approval`."""

    model_config = ConfigDict(extra="forbid")

    approved: bool
    tasks: list[Task] | None = None
    reason: str | None = Field(default=None, max_length=2000)


class BuildMetrics(BaseModel):
    totalTasks: int = 0
    completedTasks: int = 0
    failedTasks: int = 0
    skippedTasks: int = 0
    cachedTasks: int = 0
    promptTokens: int = 0
    completionTokens: int = 0
    costUsd: float | None = 0.0
    planCostUsd: float | None = 0.0
    durationMs: int = 0


class TaskView(BaseModel):
    """A planned task with its run state, as `GET /builds/{id}` shows it."""

    id: str
    type: str
    name: str
    description: str
    dependsOn: list[str]
    targetPath: str | None = None
    status: TaskStatus
    attempt: int = 0
    cached: bool = False
    error: str | None = None
    files: list[str] = Field(default_factory=list)


class PlanView(BaseModel):
    """The build's plan, each task with its run state."""

    planId: str
    estimatedDuration: float | None = None
    recovery: Recovery | None = None
    tasks: list[TaskView] = Field(default_factory=list)


class BuildView(BaseModel):
    """`GET /builds/{buildId}`: status, the plan with per-task status (null until planned), metrics, recovery."""

    buildId: str
    status: BuildStatus
    prompt: str
    framework: str | None = None
    createdAt: int
    updatedAt: int
    plan: PlanView | None = None
    recovery: Recovery | None = None
    metrics: BuildMetrics = Field(default_factory=BuildMetrics)
    failureReason: str | None = None
    message: str | None = None
