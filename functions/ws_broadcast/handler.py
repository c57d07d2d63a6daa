"""Broadcaster: the events table's stream → every WebSocket connection subscribed to the build.

Partial batch failures name the first record of a build whose push failed; the stream retries from
there, and each subscription resumes after what it already got, so nothing is pushed twice."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from shared.logic.live_delivery import broadcast
from shared.observability import lambda_handler


@lambda_handler
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    failed = broadcast(event.get("Records") or [], time_left_ms=context.get_remaining_time_in_millis())
    return {"batchItemFailures": [{"itemIdentifier": seq} for seq in failed]}
