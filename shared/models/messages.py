"""Every queue message, one model each, keyed on `kind`: built and parsed here, nowhere else.

- The tasks queue (and its DLQ) carries `TaskMessage`: run attempt `attempt` of a task.
- The task-finished FIFO queue (one message group per build) carries a `DispatchMessage`: a task's
  attempt ended (`finished`), the build must stop starting tasks (`halt`), or a task is to be
  retried (`retry`).

A body without `kind` is a task message on the tasks queue and `finished` on the task-finished queue
(what senders wrote before `kind` was written everywhere). A `kind` the dispatcher does not know is
not an error: `parse_dispatch_message` answers None, and the message is dropped with a warning.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Discriminator, Tag, TypeAdapter

from shared.models.plan import Usage


class TaskMessage(BaseModel):
    """Run attempt `attempt` of task `taskId`."""

    kind: Literal["task"] = "task"
    buildId: str
    taskId: str
    attempt: int
    task: dict[str, Any] | None = None  # the task's definition, when the sender had it at hand
    spent: Usage | None = None  # what the earlier attempts of this run of the task cost


Outcome = Literal["completed", "failed", "cancelled"]


class TaskFinished(BaseModel):
    """Attempt `attempt` of a task ended with `outcome`, having cost `costUsd` in all."""

    kind: Literal["finished"] = "finished"
    buildId: str
    taskId: str
    attempt: int = 1
    outcome: Outcome
    costUsd: float = 0.0


class HaltBuild(BaseModel):
    """Start no further task of the build (`reason`: cancelled, timed_out, budget_exceeded)."""

    kind: Literal["halt"] = "halt"
    buildId: str
    reason: str


class RetryTask(BaseModel):
    """Re-open a task (and its skipped dependents) and run it again."""

    kind: Literal["retry"] = "retry"
    buildId: str
    taskId: str


DISPATCH_KINDS = frozenset({"finished", "halt", "retry"})


def _dispatch_kind(value: Any) -> str:
    if isinstance(value, dict):
        return str(value.get("kind", "finished"))
    return str(getattr(value, "kind", "finished"))


DispatchMessage = Annotated[
    Annotated[TaskFinished, Tag("finished")] | Annotated[HaltBuild, Tag("halt")] | Annotated[RetryTask, Tag("retry")],
    Discriminator(_dispatch_kind),
]
QueueMessage = TaskMessage | TaskFinished | HaltBuild | RetryTask

_DISPATCH: TypeAdapter[TaskFinished | HaltBuild | RetryTask] = TypeAdapter(DispatchMessage)


def parse_task_message(body: str | bytes | dict[str, Any]) -> TaskMessage:
    """A tasks-queue body; raises pydantic's ValidationError when it is not one."""
    if isinstance(body, dict):
        return TaskMessage.model_validate(body)
    return TaskMessage.model_validate_json(body)


def parse_dispatch_message(body: str | bytes | dict[str, Any]) -> TaskFinished | HaltBuild | RetryTask | None:
    """A task-finished-queue body; None for a `kind` the dispatcher does not know. Raises pydantic's
    ValidationError when a known kind lacks a field (the message fails, and is retried)."""
    data = json.loads(body) if isinstance(body, str | bytes) else body
    if _dispatch_kind(data) not in DISPATCH_KINDS:
        return None
    return _DISPATCH.validate_python(data)


def message_body(message: QueueMessage) -> str:
    """The message as the queue carries it: compact JSON, fields left unset left out."""
    fields = {k: v for k, v in message.model_dump(mode="json").items() if v is not None}
    return json.dumps(fields, separators=(",", ":"))
