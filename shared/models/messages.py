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

from pydantic import BaseModel, Discriminator, Json, Tag, TypeAdapter, ValidationInfo, field_validator

from shared.models.plan import Usage


class TaskMessage(BaseModel):
    """Run attempt `attempt` of task `taskId`."""

    kind: Literal["task"] = "task"
    buildId: str
    taskId: str
    attempt: int
    task: dict[str, Any] | None = None  # the task's definition, when the sender had it at hand
    spent: Usage | None = None  # what the earlier attempts of this run of the task cost


class QueuedTask(BaseModel):
    """One record of the tasks queue as the task consumer's batch processor parses it (Powertools'
    `BatchProcessor(model=...)`): the fields of the SQS record it reads, its body a `TaskMessage`.
    A record whose body is not one fails alone, as a record the consumer could not process."""

    messageId: str
    receiptHandle: str
    body: Json[TaskMessage]


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


class UnknownKind(BaseModel):
    """A task-finished-queue message of a `kind` the dispatcher does not know: dropped with a warning."""

    kind: str
    buildId: str | None = None


class Unreadable(BaseModel):
    """A body that is not a message of its queue: not JSON, or a known kind lacking a field."""

    kind: Literal["unreadable"] = "unreadable"
    body: str  # its first 500 characters
    error: str


def from_tasks_dlq(event_source_arn: str | None) -> bool:
    """Whether a record the dispatcher receives comes from the tasks DLQ (a standard queue) rather
    than the task-finished FIFO queue (a record without a source is read as the FIFO queue's)."""
    return bool(event_source_arn) and not str(event_source_arn).endswith(".fifo")


class QueuedDispatch(BaseModel):
    """One record of the dispatcher's two queues as its batch processor parses it (Powertools'
    `SqsFifoPartialProcessor(model=...)`): a `TaskMessage` from the tasks DLQ, a `DispatchMessage`
    from the task-finished queue. Parsing it never fails: an unknown kind is an `UnknownKind` and a
    body that is not a message of its queue an `Unreadable`, for the consumer to drop or fail, so a
    poisoned record cannot stop the batch (the processor re-parses the records it holds back after a
    failure in their group outside its error handling)."""

    messageId: str
    receiptHandle: str
    eventSourceARN: str | None = None
    body: TaskFinished | HaltBuild | RetryTask | TaskMessage | UnknownKind | Unreadable

    @field_validator("body", mode="plain")
    @classmethod
    def _message(cls, raw: Any, info: ValidationInfo) -> TaskFinished | HaltBuild | RetryTask | TaskMessage | UnknownKind | Unreadable:
        try:
            data = json.loads(raw) if isinstance(raw, str | bytes) else raw
            if from_tasks_dlq(info.data.get("eventSourceARN")):
                return parse_task_message(data)
            known = parse_dispatch_message(data)
            if known is not None:
                return known
            build_id = data.get("buildId")
            return UnknownKind(kind=str(data.get("kind")), buildId=None if build_id is None else str(build_id))
        except (ValueError, TypeError, AttributeError) as exc:  # pydantic's ValidationError is a ValueError
            return Unreadable(body=str(raw)[:500], error=str(exc)[:500])

    @property
    def from_tasks_dlq(self) -> bool:
        return from_tasks_dlq(self.eventSourceARN)


class ReceiveAttributes(BaseModel):
    ApproximateReceiveCount: int = 1


class QueuedDelivery(BaseModel):
    """One record of the webhook queue as the webhook consumer's batch processor parses it: its body
    is the events table's stream record, read (and dead-lettered as it came) by the webhook logic."""

    messageId: str
    receiptHandle: str
    attributes: ReceiveAttributes = ReceiveAttributes()
    body: str


def message_body(message: QueueMessage) -> str:
    """The message as the queue carries it: compact JSON, fields left unset left out."""
    fields = {k: v for k, v in message.model_dump(mode="json").items() if v is not None}
    return json.dumps(fields, separators=(",", ":"))
