"""Task consumer: runs one task attempt per SQS message, with partial batch failures.

While the work runs (the task and the dependents its completion hands over), the message is kept
invisible a lease at a time, so if this invocation dies it is back within one lease
(`shared.limits.task_lease_s`) rather than the queue's whole visibility timeout."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.typing import LambdaContext

from shared import limits
from shared.dal.queues import Lease
from shared.logic.attempts.claim import ComeBackLater
from shared.logic.attempts.runner import run_task
from shared.logic.services import services
from shared.models.queued import QueuedTask
from shared.observability import correlate, lambda_handler


def _record(record: QueuedTask, lambda_context: LambdaContext) -> None:
    msg = record.body
    correlate(msg.buildId)
    settings = services().settings
    lease = Lease(settings.tasks_queue_url, record.receiptHandle, limits.task_lease_s(settings.task_timeout_seconds))
    with lease.held():
        try:
            run_task(msg, lambda_context.get_remaining_time_in_millis, memory_mb=int(lambda_context.memory_limit_in_mb))
        except ComeBackLater as exc:  # left on the queue, to reappear when it is worth another look
            lease.come_back_in(exc.after_s)
            raise


@lambda_handler
def handler(event: dict[str, Any], context: LambdaContext) -> Mapping[str, Any]:
    # One processor per invocation: it holds the batch's state. Its model is our own record model
    # (the processor validates each record with it and reports failures by `messageId`), not a
    # subclass of Powertools' SqsRecordModel: importing the parser package and building its SQS
    # models would add ~15 ms to this function's cold start.
    processor = BatchProcessor(event_type=EventType.SQS, model=QueuedTask)  # type: ignore[arg-type]
    return process_partial_response(event=event, record_handler=_record, processor=processor, context=context)
