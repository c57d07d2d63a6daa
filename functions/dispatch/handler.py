"""The dispatcher. Invoked three ways:

- by Step Functions: `{"action": "execute" | "await_approval", buildId, taskToken}`,
  `{"action": "settle_plan_failure", buildId, taskToken, error}` and
  `{"action": "finalize", "state": ...}`;
- by the task-finished FIFO queue (one message group per build, so one build's DAG advances
  serially): "task finished", "halt", "retry";
- by the tasks DLQ: a task message that kept killing its function; the task is marked failed.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from aws_lambda_powertools.utilities.batch import SqsFifoPartialProcessor, process_partial_response
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from shared.errors import NotFound
from shared.logic.finalizing import finalize
from shared.logic.readiness import dispatching
from shared.observability import correlate, lambda_handler


def _record(record: SQSRecord) -> None:
    body = json.loads(record.body)
    correlate(body.get("buildId"))
    if record.event_source_arn and not record.event_source_arn.endswith(".fifo"):
        dispatching.on_dead_task(body)  # from the tasks DLQ
    else:
        dispatching.on_finished(body)


@lambda_handler
def handler(event: dict[str, Any], context: LambdaContext) -> Mapping[str, Any]:
    if "Records" in event:
        return process_partial_response(
            event=event, record_handler=_record, processor=SqsFifoPartialProcessor(skip_group_on_error=True), context=context
        )
    action = event.get("action")
    if action == "finalize":
        state = event["state"]
        correlate(state.get("buildId"))
        return finalize(state)
    correlate(event.get("buildId"))
    steps = {
        "execute": dispatching.execute,
        "await_approval": dispatching.await_approval,
        "settle_plan_failure": lambda build_id, token: dispatching.settle_plan_failure(build_id, token, event["error"]),
    }
    if action not in steps:
        raise ValueError(f"unknown dispatch action {action!r}")
    try:
        return steps[action](event["buildId"], event["taskToken"])
    except NotFound:
        raise
    except Exception as exc:
        raise StepInterrupted(f"{action} of {event['buildId']} was interrupted: {exc}") from exc


class StepInterrupted(Exception):
    """A step Step Functions waits on (execute, await_approval) failed part way. Both are safe to
    run again, and the state machine retries this error by its name."""
