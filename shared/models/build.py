"""Builds and the HTTP request bodies (docs/api.md#request-rules)."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, field_validator

from shared.models.events import UsageData
from shared.models.plan import MAX_PATH_LENGTH, Recovery, Task, TaskInput, TaskStatus, safe_relative_path

MAX_INPUT_FILES = 200
DEFAULT_MAX_CONCURRENCY = 5  # tasks of one build running at once, unless the request says
MAX_INPUT_BYTES = 1024 * 1024
MAX_BUDGET_USD = 1_000_000.0
MIN_BUDGET_USD = 0.000001  # DynamoDB numbers have 38 digits: far smaller or larger ones cannot be stored

# A relative POSIX path, as the API documents and enforces it: segments of printable characters
# (none starting with whitespace or "..", no ":" or "\\"), with optional "." segments and repeated
# or trailing slashes (normalised away). Every path
# it admits is also accepted by `safe_relative_path`, so the document and the validation agree.
_SEGMENT = (
    r"\.?[^\x00-\x20\x7f-\xa0\u1680\u2000-\u200b\u2028\u2029\u202f\u205f\u3000\ufeff./\\:]"
    r"[^/\\:\x00-\x1f\x7f]*"
)  # whitespace spelled out: regex engines disagree on what `\s` means (U+0085)
RELATIVE_PATH_PATTERN = rf"^(\./+)*{_SEGMENT}(/+(\.|{_SEGMENT}))*/*$"
WEBHOOK_URL_PATTERN = r"^https?://[^\x00-\x20\x7f\\@/?#]+([/?#][^\x00-\x20\x7f\\]*)?$"


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
SUCCEEDED_BUILD_STATUSES = frozenset({BuildStatus.completed, BuildStatus.completed_with_errors})


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

    path: Annotated[str, Field(min_length=1, max_length=MAX_PATH_LENGTH, pattern=RELATIVE_PATH_PATTERN)]
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
    webhookUrl: str | None = Field(
        default=None,
        max_length=2048,
        pattern=WEBHOOK_URL_PATTERN,
        description="https (plain http only for a host in WEBHOOK_ALLOWED_HOSTS); refused when its host "
        "resolves to a private, loopback, link-local or metadata address",
    )
    requireApproval: bool | None = None
    budgetUsd: float | None = Field(
        default=None, ge=MIN_BUDGET_USD, le=MAX_BUDGET_USD, allow_inf_nan=False
    )  # 1e999 parses as inf
    maxConcurrency: int = Field(default=DEFAULT_MAX_CONCURRENCY, ge=1, le=20)

    @field_validator("files")
    @classmethod
    def _files_size(cls, files: list[InputFile]) -> list[InputFile]:
        total = sum(len(f.content.encode()) for f in files)
        if total > MAX_INPUT_BYTES:
            raise ValueError(f"{total} bytes in all, more than {MAX_INPUT_BYTES}")
        return files


class EditedTaskInput(TaskInput):
    targetPath: str | None = Field(default=None, max_length=MAX_PATH_LENGTH, pattern=RELATIVE_PATH_PATTERN)


class EditedTask(Task):
    """A task of an edited plan, as a client sends it with an approval."""

    input: EditedTaskInput = Field(default_factory=EditedTaskInput)


class ApprovalRequest(BaseModel):
    """Body of `POST /builds/{buildId}/approval`."""

    model_config = ConfigDict(extra="forbid")

    approved: bool
    tasks: list[EditedTask] | None = Field(default=None, min_length=1, max_length=200)
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
    estimatedDuration: float = Field(description="Seconds, as planned")
    dependsOn: list[str]
    targetPath: str | None = None
    status: TaskStatus
    attempt: int = 0
    startedAt: int | None = Field(default=None, description="Epoch ms the current attempt started")
    completedAt: int | None = Field(default=None, description="Epoch ms it completed")
    durationMs: int | None = Field(default=None, description="How long its last attempt ran")
    usage: UsageData | None = None
    cached: bool = False
    skipReason: str | None = Field(default=None, description="`dependency_failed` or `user` when skipped")
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
    startedAt: int | None = Field(default=None, description="Epoch ms the current run started executing")
    estimatedDuration: float | None = Field(default=None, description="Critical path of the plan, seconds")
    planVersion: int | None = Field(default=None, description="1 for the first plan, +1 per approved edit")
    plan: PlanView | None = None
    recovery: Recovery | None = None
    metrics: BuildMetrics = Field(default_factory=BuildMetrics)
    failureReason: str | None = None
    message: str | None = None
