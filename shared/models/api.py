"""What the HTTP API answers: one pydantic model per response body, so the OpenAPI document (and a
client generated from it) describes every answer exactly."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from shared.models.build import BuildMetrics, BuildStatus
from shared.models.events import Event
from shared.models.plan import TaskStatus

# A page position in the caller's build list: `<createdAt>-<buildId>`. Any string of this shape is a
# valid position (the owner always comes from the token), so a client can never point into another
# user's list.
CURSOR_PATTERN = r"^[0-9]{1,15}-[A-Za-z0-9_]{1,64}$"


class FieldProblem(BaseModel):
    field: str = Field(description="The request field at fault (dotted for nested fields, `body` for the whole body)")
    message: str | None = None


class ErrorInfo(BaseModel):
    code: str = Field(description="Stable machine-readable code, e.g. `not_found`, `conflict`, `invalid_request`")
    message: str = Field(description="What went wrong, for a human")
    details: list[FieldProblem] | None = Field(default=None, description="The fields at fault (422, some 409)")


class ErrorResponse(BaseModel):
    """Every 4xx/5xx answer: `{"error": {"code", "message", "details"?}}`."""

    error: ErrorInfo


class BuildLinks(BaseModel):
    self: str
    events: str


class BuildCreated(BaseModel):
    """`POST /builds` (202): the build is accepted and planning."""

    buildId: str
    status: Literal[BuildStatus.planning] = BuildStatus.planning
    links: BuildLinks


class BuildSummary(BaseModel):
    buildId: str
    status: BuildStatus
    prompt: str = Field(description="The first 200 characters of the prompt")
    createdAt: int
    updatedAt: int
    taskCount: int | None = None
    metrics: BuildMetrics | None = None


class BuildList(BaseModel):
    """`GET /builds`: the caller's builds, newest first; pass `next` as `cursor` for more."""

    builds: list[BuildSummary]
    next: str | None = Field(default=None, pattern=CURSOR_PATTERN)


class EventPage(BaseModel):
    """`GET /builds/{buildId}/events`: events after `after` in `seq` order; `next` is the `after`
    to pass for more (null when this page reached the end of the log as it stands)."""

    events: list[Event]
    next: int | None = None


class ApprovalResult(BaseModel):
    buildId: str
    approved: bool
    planVersion: int | None = Field(default=None, description="The plan version that will run (approvals only)")


class CancelResult(BaseModel):
    buildId: str
    status: Literal[BuildStatus.cancelled] = BuildStatus.cancelled


class TaskActionResult(BaseModel):
    """`retry` (status `queued`) and `skip` (status `skipped`), both 202."""

    buildId: str
    taskId: str
    status: Literal[TaskStatus.queued, TaskStatus.skipped]
    reopened: list[str] = Field(default_factory=list, description="Tasks this made runnable again")
    buildResumed: bool = Field(default=False, description="True when the build had ended and runs again")
