"""The build and task items as the tables store them, parsed once where the data layer reads them.

Each attribute's default is stated here and nowhere else: an attribute the engine has not written
yet reads as its default (a build's `maxConcurrency` 5, a dispatch version 0, no plan). Names are
the stored ones, letter for letter. A read of some attributes only (a projection) still carries the
required ones: the data layer adds them to what it asks for.
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import BaseModel, ConfigDict

from shared.models.build import DEFAULT_MAX_CONCURRENCY, BuildMetrics, BuildStatus
from shared.models.plan import FileInfo, Recovery, Task, TaskStatus, Usage


class _Record(BaseModel):
    # An attribute no field names is left out (mypy finds a read of one); frozen: a record is what
    # was read, a change is a write (`model_copy(update=...)` for the copy a process keeps).
    model_config = ConfigDict(extra="ignore", frozen=True)

    REQUIRED: ClassVar[tuple[str, ...]]  # what every read asks for, a projection included


class PlanError(BaseModel):
    """Why the plan step failed, as Step Functions reported it (kept for the build's end)."""

    model_config = ConfigDict(frozen=True)

    Error: str = "PlanningFailed"
    Cause: str = ""


class BuildRecord(_Record):
    """A build: its request, its life (status, tokens of the workflow's waits, deadlines) and the
    dispatch state its tasks run by."""

    REQUIRED: ClassVar[tuple[str, ...]] = ("buildId", "ownerId", "status", "prompt", "createdAt")

    buildId: str
    ownerId: str
    status: BuildStatus
    prompt: str
    createdAt: int  # epoch ms
    updatedAt: int | None = None
    framework: str | None = None
    webhookUrl: str | None = None
    requireApproval: bool = False
    budgetUsd: float | None = None
    maxConcurrency: int = DEFAULT_MAX_CONCURRENCY
    inputFiles: tuple[str, ...] = ()
    expiresAt: int | None = None  # epoch s (the table's TTL)
    # plan
    planId: str | None = None
    planVersion: int | None = None  # 1 once stored, +1 per approved edit
    taskCount: int = 0
    estimatedDuration: float | None = None
    recovery: Recovery | None = None
    blocked: bool = False  # circular dependencies left for the user to edit
    cycles: tuple[str, ...] | None = None  # each as "a → b → a"
    planUsage: Usage | None = None  # the plan call and its heal calls
    planError: PlanError | None = None
    streamedTasks: int | None = None  # tasks handed to the dispatch state while the plan streams
    # approval
    approvalToken: str | None = None
    approvalRequestedAt: int | None = None
    approvalExpiresAt: int | None = None
    approvedAt: int | None = None
    approvalDecision: str | None = None  # "approved" | "rejected", once taken (the token stays till answered)
    approvalReason: str | None = None  # a rejection's
    approvalEdit: bool = False  # approved with an edited plan ...
    planStoredVersion: int | None = None  # ... stored once this equals planVersion
    decidedAt: int | None = None
    # execution
    executeToken: str | None = None
    executeStartedAt: int | None = None
    deadlineAt: int | None = None  # epoch ms: the build times out after it
    runs: int = 1  # a re-opened build runs again, as runId
    runId: str | None = None  # the current run's execution (none stored: <id>, or <id>-run<N> from before)
    runStartedAt: int | None = None  # the last re-open; else the build's creation
    dispatch: str | None = None  # scheduler.DispatchState, as JSON
    dispatchVersion: int = 0
    stepVersion: int = 0  # the last step that decided sends ...
    sentVersion: int = 0  # ... and the last whose sends are confirmed
    haltedBy: str | None = None
    # end
    finishedAt: int | None = None
    failureReason: str | None = None
    message: str | None = None
    metrics: BuildMetrics | None = None

    @property
    def run_started_at(self) -> int:
        """When the build's current run began: its creation, or the last re-open."""
        return self.runStartedAt or self.createdAt


class TaskRecord(_Record):
    """A planned task: its definition, place in the plan, status and attempt, and what its runs
    produced and spent."""

    REQUIRED: ClassVar[tuple[str, ...]] = ("buildId", "taskId", "status", "task.id", "task.type", "task.name")

    buildId: str
    taskId: str
    task: Task
    status: TaskStatus
    planId: str | None = None
    order: int = 0  # place in the plan
    streamOrder: int | None = None  # place in the order handed while the plan streamed
    attempt: int = 0
    expiresAt: int | None = None
    startedAt: int | None = None  # the current attempt's, epoch ms
    completedAt: int | None = None
    durationMs: int | None = None
    updatedAt: int | None = None
    usage: Usage | None = None  # this run's attempts
    error: str | None = None
    skippedBecause: str | None = None  # "user", or the dependency that failed
    cached: bool = False
    files: tuple[FileInfo, ...] = ()
    # the completing commit's hand-off: what it released, and of that what it ran itself
    released: tuple[tuple[str, int], ...] | None = None
    handedTo: tuple[tuple[str, int], ...] | None = None
    # every attempt of every run, added up as each settles (the build's metrics sum these)
    spentUsd: float | None = None
    spentPromptTokens: int = 0
    spentCompletionTokens: int = 0
    spentUnpriced: bool = False
    spentEstimated: bool = False
