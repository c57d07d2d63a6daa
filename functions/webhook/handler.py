"""Webhook consumer: signs and POSTs each recorded event, with partial batch failures."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.typing import LambdaContext

from shared.constants import WEBHOOK_DLQ_URL, WEBHOOK_QUEUE_URL
from shared.logic.webhooks import Received, handle
from shared.models.queued import QueuedDelivery
from shared.observability import lambda_handler


def _record(record: QueuedDelivery) -> None:
    handle(
        Received(
            body=record.body,
            receipt_handle=record.receiptHandle,
            receive_count=record.receive_count,
            queue_url=os.environ.get(WEBHOOK_QUEUE_URL, ""),
        ),
        dlq_url=os.environ.get(WEBHOOK_DLQ_URL),
    )


@lambda_handler
def handler(event: dict[str, Any], context: LambdaContext) -> Mapping[str, Any]:
    processor = BatchProcessor(event_type=EventType.SQS, model=QueuedDelivery)  # type: ignore[arg-type]
    return process_partial_response(event=event, record_handler=_record, processor=processor, context=context)
