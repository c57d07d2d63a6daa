"""Task consumer: runs one task attempt per SQS message, with partial batch failures."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from shared.logic.task_runner import TaskMessage, run_task
from shared.observability import correlate, lambda_handler


def _record(record: SQSRecord, lambda_context: LambdaContext) -> None:
    msg = TaskMessage.model_validate_json(record.body)
    correlate(msg.buildId)
    run_task(msg, lambda_context.get_remaining_time_in_millis)


@lambda_handler
def handler(event: dict[str, Any], context: LambdaContext) -> Mapping[str, Any]:
    # One processor per invocation: it holds the batch's state.
    return process_partial_response(
        event=event, record_handler=_record, processor=BatchProcessor(event_type=EventType.SQS), context=context
    )
