"""Plans and tasks (docs/plans.md#a-task). Field names are the public ones, letter for letter."""

from __future__ import annotations

import posixpath
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field, field_validator

MAX_PATH_LENGTH = 255

# The size of a plan, by design: every record and event that grows with a plan is bounded for a plan
# this big with fields this long (MAX_PLAN_TASKS may be lowered in the settings, never raised).
MAX_PLAN_TASKS = 1000
MAX_TASK_ID_LENGTH = 64
MAX_TASK_NAME_LENGTH = 200
MAX_TASK_DESCRIPTION_LENGTH = 2000
MAX_TASK_PROMPT_LENGTH = 8000  # input.prompt and input.context, each


class TaskType(StrEnum):
    create_file = "create_file"
    modify_file = "modify_file"
    create_component = "create_component"
    setup_config = "setup_config"
    install_deps = "install_deps"


class TaskStatus(StrEnum):
    pending = "pending"
    queued = "queued"
    in_progress = "in_progress"
    completed = "completed"
    failed = "failed"
    timeout = "timeout"
    skipped = "skipped"
    cancelled = "cancelled"


# Named sets of task statuses: the rules compare against these, and the data layer turns them into
# conditions (`Update.when_in` / `when_not_in`).
TERMINAL_TASK_STATUSES = frozenset(  # settled: never claimed again until a retry re-opens it
    {TaskStatus.completed, TaskStatus.failed, TaskStatus.timeout, TaskStatus.skipped, TaskStatus.cancelled}
)
UNSTARTED_TASK_STATUSES = frozenset({TaskStatus.pending, TaskStatus.queued})  # waiting for a worker
FAILED_TASK_STATUSES = frozenset({TaskStatus.failed, TaskStatus.timeout})  # ended without output
RETRYABLE_TASK_STATUSES = FAILED_TASK_STATUSES | {TaskStatus.skipped, TaskStatus.cancelled}  # a retry re-opens
SKIPPABLE_TASK_STATUSES = FAILED_TASK_STATUSES  # a user may skip it and let its dependents run


class UnsafePathError(ValueError):
    pass


def safe_relative_path(path: str) -> str:
    """Return `path` normalised if it stays inside the build, else raise UnsafePathError.

    Refuses absolute paths, `..` segments, backslashes, NUL and over-long paths.
    """
    if not isinstance(path, str) or not path.strip():
        raise UnsafePathError("path is empty")
    if "\x00" in path:
        raise UnsafePathError("path contains NUL")
    if "\\" in path:
        raise UnsafePathError("path contains a backslash")
    if len(path) > MAX_PATH_LENGTH:
        raise UnsafePathError(f"path longer than {MAX_PATH_LENGTH} characters")
    if path.startswith("/") or (len(path) > 1 and path[1] == ":"):
        raise UnsafePathError("path is absolute")
    if any(part == ".." for part in path.split("/")):
        raise UnsafePathError("path escapes the build with '..'")
    if any(ord(ch) < 0x20 for ch in path):
        raise UnsafePathError("path contains a control character")
    normalised = posixpath.normpath(path)
    if normalised in ("", ".") or normalised.startswith("../"):
        raise UnsafePathError("path does not name a file")
    return normalised


class TaskInput(BaseModel):
    model_config = ConfigDict(extra="ignore")

    prompt: str | None = Field(default=None, max_length=MAX_TASK_PROMPT_LENGTH)
    context: str | None = Field(default=None, max_length=MAX_TASK_PROMPT_LENGTH)
    targetPath: str | None = None
    dependencies: list[str] = Field(default_factory=list, max_length=MAX_PLAN_TASKS)

    @field_validator("targetPath")
    @classmethod
    def _confined(cls, v: str | None) -> str | None:
        return None if v is None else safe_relative_path(v)

    @field_validator("dependencies", mode="before")
    @classmethod
    def _deps_list(cls, v: object) -> object:
        return [] if v is None else v


class Task(BaseModel):
    """A task as planned: what the LLM wrote, validated."""

    model_config = ConfigDict(extra="ignore")

    id: str = Field(min_length=1, max_length=MAX_TASK_ID_LENGTH)
    type: TaskType
    name: str = Field(min_length=1, max_length=MAX_TASK_NAME_LENGTH)
    description: str = Field(default="", max_length=MAX_TASK_DESCRIPTION_LENGTH)
    estimatedDuration: float = Field(default=10.0, ge=0, le=3600)
    priority: int = Field(default=5, ge=0, le=1000)
    input: TaskInput = Field(default_factory=TaskInput)

    @property
    def dependencies(self) -> list[str]:
        return self.input.dependencies

    def summary(self) -> dict[str, str]:
        return {"id": self.id, "name": self.name, "type": self.type.value, "description": self.description}

    def planned(self) -> dict[str, object]:
        """The task as plan events show it: its summary, estimate and dependencies."""
        return {**self.summary(), "estimatedDuration": self.estimatedDuration, "dependsOn": list(self.dependencies)}


class Recovery(StrEnum):
    auto_priority = "auto-priority"
    llm_healed = "llm-healed"
    linear_fallback = "linear-fallback"


class Plan(BaseModel):
    planId: str
    tasks: list[Task]
    estimatedDuration: float = 0.0
    recovery: Recovery | None = None
    warnings: list[str] = Field(default_factory=list)


class Usage(BaseModel):
    """Tokens and cost of one or more provider calls. `estimated`: some call reported no usage, so
    its tokens were estimated from the characters sent and received (and priced as such)."""

    promptTokens: int = 0
    completionTokens: int = 0
    costUsd: float | None = 0.0
    cacheReadTokens: int | None = None
    cacheWriteTokens: int | None = None
    estimated: bool = False

    def __add__(self, other: Usage) -> Usage:
        cost = None if self.costUsd is None or other.costUsd is None else round(self.costUsd + other.costUsd, 10)
        return Usage(
            promptTokens=self.promptTokens + other.promptTokens,
            completionTokens=self.completionTokens + other.completionTokens,
            costUsd=cost,
            estimated=self.estimated or other.estimated,
        )

    def public(self) -> dict[str, object]:
        """The `usage` object of a `task_completed` event."""
        return {"promptTokens": self.promptTokens, "completionTokens": self.completionTokens, "costUsd": self.costUsd}


class FileInfo(BaseModel):
    path: str
    size: int
    sha256: str
    taskId: str
