"""Plan step of the state machine: stream, validate and store the build's plan."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from shared.logic.planning import run_plan
from shared.observability import correlate, lambda_handler


@lambda_handler
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    correlate(event["buildId"])
    return run_plan(event["buildId"], execution=event.get("execution"))
