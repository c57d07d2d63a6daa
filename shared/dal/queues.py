"""SQS: the tasks queue and the task-finished FIFO queue."""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import re
import threading
from collections.abc import Iterator
from typing import Any

from shared.dal.aws import client
from shared.models.messages import QueueMessage, TaskMessage, message_body
from shared.models.plan import Usage
from shared.observability import logger


def send_batch(queue_url: str, entries: list[dict[str, Any]]) -> None:
    """Send entries ({Id, MessageBody, ...}) in batches of 10; raise if any is refused."""
    sqs = client("sqs")
    for start in range(0, len(entries), 10):
        batch = entries[start : start + 10]
        resp = sqs.send_message_batch(QueueUrl=queue_url, Entries=batch)
        failed = resp.get("Failed") or []
        if failed:
            raise RuntimeError(f"SQS refused {len(failed)} message(s): {failed[0].get('Message')}")


_MAX_EMBEDDED_TASK = 64 * 1024  # a definition larger than this is read from the table instead


def task_message(
    build_id: str,
    task_id: str,
    attempt: int,
    *,
    delay_s: int = 0,
    idx: int = 0,
    task: dict[str, Any] | None = None,
    spent: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A tasks-queue entry. `task`, the task's definition, spares its consumer two reads;
    `spent`, on a retry, is what the earlier attempts of the task's run cost."""
    message = TaskMessage(
        buildId=build_id, taskId=task_id, attempt=attempt, spent=Usage.model_validate(spent) if spent else None
    )
    text = message_body(message)
    if task is not None:
        with_task = message_body(message.model_copy(update={"task": task}))
        if len(with_task) <= _MAX_EMBEDDED_TASK:
            text = with_task
    entry: dict[str, Any] = {"Id": f"m{idx}", "MessageBody": text}
    if delay_s > 0:
        entry["DelaySeconds"] = min(int(delay_s), 900)
    return entry


def finished_message(message: QueueMessage, dedup_id: str, *, idx: int = 0) -> dict[str, Any]:
    """An entry for the task-finished FIFO queue: one group per build keeps its dispatch serial.

    The deduplication id is scoped to the build: a queue that deduplicates queue-wide (the local
    runtime's) must not drop build B's "setup:1:completed" as a copy of build A's. Ids that SQS
    would refuse or that would have to be cut (and so could collide) are hashed instead.
    """
    dedup = f"{message.buildId}:{dedup_id}"
    if not _DEDUP_ID.fullmatch(dedup):
        dedup = hashlib.sha256(dedup.encode()).hexdigest()
    return {
        "Id": f"m{idx}",
        "MessageBody": message_body(message),
        "MessageGroupId": message.buildId,
        "MessageDeduplicationId": dedup,
    }


_DEDUP_ID = re.compile(r"[\x21-\x7e]{1,128}")  # what SQS accepts: 1-128 printable ASCII characters


def set_visibility(queue_url: str, receipt_handle: str, seconds: float) -> None:
    """Make a received message invisible for `seconds` from now (SQS allows 0 to 12 hours)."""
    client("sqs").change_message_visibility(
        QueueUrl=queue_url, ReceiptHandle=receipt_handle, VisibilityTimeout=max(0, min(43_200, round(seconds)))
    )


def send_dead_letter(queue_url: str, body: str, reason: str) -> None:
    """Put a message on a dead-letter queue at once, with why (`reason`, cut to 1,000 characters)."""
    client("sqs").send_message(
        QueueUrl=queue_url,
        MessageBody=body,
        MessageAttributes={"reason": {"DataType": "String", "StringValue": reason[:1000]}},
    )


class Lease:
    """A received message kept invisible while its work runs: `lease_s` at a time, renewed every
    third of it, so if the consumer dies the message is back within one lease. `come_back_in(s)`
    sets when it reappears once the work ends without deleting it."""

    def __init__(self, queue_url: str, receipt_handle: str, lease_s: float) -> None:
        self.queue_url = queue_url
        self.receipt_handle = receipt_handle
        self.lease_s = lease_s
        self.after_s: float | None = None
        self._stop = threading.Event()

    def come_back_in(self, seconds: float) -> None:
        self.after_s = seconds

    def _renew(self) -> bool:
        try:
            set_visibility(self.queue_url, self.receipt_handle, self.lease_s)
            return True
        except Exception as exc:  # the message may be gone (deleted, or its receipt expired)
            logger.warning("a task message's lease could not be renewed", extra={"error": str(exc)[:300]})
            return False

    def _keep(self) -> None:
        with contextlib.suppress(BaseException):  # a stopped invocation stops renewing, as on Lambda
            while not self._stop.wait(self.lease_s / 3) and self._renew():
                pass

    @contextlib.contextmanager
    def held(self) -> Iterator[Lease]:
        self._renew()
        # The renewing thread carries the invocation's context, as a Lambda's threads do.
        thread = threading.Thread(target=contextvars.copy_context().run, args=(self._keep,), daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            thread.join()
            if self.after_s is not None:
                with contextlib.suppress(Exception):
                    set_visibility(self.queue_url, self.receipt_handle, self.after_s)
