"""Each queue consumer's record, as Powertools' batch processor parses it (`model=`): the fields of
the SQS record the consumer reads, its body parsed into the queue's message (shared.models.messages).

They are our own small models, not subclasses of Powertools' `SqsRecordModel`: the processor only
calls `model_validate` and reads `messageId`, and importing the parser package and building its SQS
models costs 14-78 ms of a consumer's cold start. They sit apart from the messages so that functions
that only send messages (the API, the planner) do not build them.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, Json, ValidationInfo, field_validator

from shared.models.messages import (
    HaltBuild,
    RetryTask,
    TaskFinished,
    TaskMessage,
    parse_dispatch_message,
    parse_task_message,
)


class QueuedTask(BaseModel):
    """One record of the tasks queue as the task consumer's batch processor parses it (Powertools'
    `BatchProcessor(model=...)`): the fields of the SQS record it reads, its body a `TaskMessage`.
    A record whose body is not one fails alone, as a record the consumer could not process."""

    messageId: str
    receiptHandle: str
    body: Json[TaskMessage]


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


class QueuedDelivery(BaseModel):
    """One record of the webhook queue as the webhook consumer's batch processor parses it: its body
    is the events table's stream record, read (and dead-lettered as it came) by the webhook logic."""

    messageId: str
    receiptHandle: str
    attributes: dict[str, str] = {}
    body: str

    @property
    def receive_count(self) -> int:
        return int(self.attributes.get("ApproximateReceiveCount") or 1)


