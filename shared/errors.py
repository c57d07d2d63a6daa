"""Domain errors. The API maps them to HTTP in one place; the pipeline maps them to events."""

from __future__ import annotations

from typing import Any


class StepwiseError(Exception):
    code = "error"
    http_status = 500

    def __init__(self, message: str, *, details: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class NotFound(StepwiseError):
    code = "not_found"
    http_status = 404


class Conflict(StepwiseError):
    code = "conflict"
    http_status = 409


class InvalidInput(StepwiseError):
    code = "invalid_input"
    http_status = 422


class TooLarge(StepwiseError):
    code = "too_large"
    http_status = 413


class Unauthorized(StepwiseError):
    code = "unauthorized"
    http_status = 401


class StateConflict(StepwiseError):
    """A conditional write lost: the item was not in the state the caller expected."""

    code = "state_conflict"
    http_status = 409


class Throttled(StepwiseError):
    """An AWS service still refused for its request rate after the SDK's own retries."""

    code = "throttled"
    http_status = 429


# --- errors the pipeline raises to Step Functions (their class name is the ASL error name) -------
class PlanningFailed(StepwiseError):
    pass


class PlanTooLarge(StepwiseError):
    """The plan has more tasks than MAX_PLAN_TASKS allows."""


class CircularDependencies(StepwiseError):
    pass


class EventTooLarge(StepwiseError):
    """An event whose JSON would exceed the size every event is bounded by: refused, never written."""


class ApprovalRejected(StepwiseError):
    pass


class BudgetExceeded(StepwiseError):
    pass
