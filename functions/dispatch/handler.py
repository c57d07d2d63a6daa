"""The dispatcher. Invoked three ways:

- by Step Functions: `{"action": "execute" | "await_approval", buildId, taskToken}`,
  `{"action": "settle_plan_failure", buildId, taskToken, error}` and
  `{"action": "finalize", "state": ...}`;
- by the task-finished FIFO queue (one message group per build, so one build's DAG advances
  serially): "task finished", "halt", "retry";
- by the tasks DLQ: a task message that kept killing its function; the task is marked failed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aws_lambda_powertools.utilities.batch import SqsFifoPartialProcessor, process_partial_response
from aws_lambda_powertools.utilities.typing import LambdaContext

from shared import limits, resources
from shared.backoff import exponential_backoff_s
from shared.dal.queues import set_visibility
from shared.errors import NotFound
from shared.logic.finalizing import finalize
from shared.logic.readiness import dispatching
from shared.models.messages import TaskMessage
from shared.models.queued import QueuedDispatch, UnknownKind, Unreadable
from shared.observability import correlate, lambda_handler, logger
from shared.settings import get_settings


def _record(record: QueuedDispatch) -> None:
    msg = record.body
    if isinstance(msg, Unreadable):
        if record.from_tasks_dlq:  # already dead-lettered: it names no task to fail
            # Its id and size, not its body: a task message carries the user's prompt and plan.
            logger.error(
                "unreadable message in the tasks DLQ dropped",
                extra={"messageId": record.messageId, "bodyChars": len(msg.body), "error": msg.error.splitlines()[0][:200]},
            )
            return
        raise UnreadableMessage(msg.error)  # retried, then the task-finished DLQ takes it
    correlate(msg.buildId)
    if isinstance(msg, UnknownKind):
        logger.warning("unknown dispatch message dropped", extra={"kind": msg.kind})
    elif isinstance(msg, TaskMessage):
        dispatching.on_dead_task(msg)  # from the tasks DLQ
    else:
        dispatching.on_finished(msg)


@lambda_handler
def handler(event: dict[str, Any], context: LambdaContext) -> Mapping[str, Any]:
    if "Records" in event:
        processor = SqsFifoPartialProcessor(model=QueuedDispatch, skip_group_on_error=True)  # type: ignore[arg-type]
        result = process_partial_response(event=event, record_handler=_record, processor=processor, context=context)
        _come_back_soon(event["Records"], {str(f["itemIdentifier"]) for f in result.get("batchItemFailures") or []})
        return result
    action = event.get("action")
    if action == "finalize":
        state = event["state"]
        correlate(state.get("buildId"))
        return finalize(state, run_id=event.get("runId"))
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


def _come_back_soon(records: list[dict[str, Any]], failed: set[str]) -> None:
    """A failed record of the task-finished queue (and those of its group held back with it) is
    received again after a backoff on its receive count, not after the queue's whole visibility."""
    if not failed:
        return
    settings = get_settings()
    cap = resources.queue_visibility_s("task-finished", settings.task_timeout_seconds)
    for record in records:
        if record.get("messageId") not in failed or not str(record.get("eventSourceARN", "")).endswith(".fifo"):
            continue
        receives = int((record.get("attributes") or {}).get("ApproximateReceiveCount") or 1)
        wait = exponential_backoff_s(receives, base=limits.DISPATCH_RETRY_BASE_S, cap=cap, jitter=(0.5, 1.0))
        try:
            set_visibility(settings.task_finished_queue_url, record["receiptHandle"], wait)
        except Exception as exc:  # it comes back after the queue's visibility all the same
            logger.warning("could not shorten a failed record's visibility", extra={"error": str(exc)[:300]})


class UnreadableMessage(Exception):
    """A task-finished-queue body that is not a dispatch message (not JSON, or a known kind lacking a
    field): its record fails, and with it the rest of its build's group in the batch."""


class StepInterrupted(Exception):
    """A step Step Functions waits on (execute, await_approval) failed part way. Both are safe to
    run again, and the state machine retries this error by its name."""
