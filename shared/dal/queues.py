"""SQS: the tasks queue and the task-finished FIFO queue."""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

from shared.dal.aws import client


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
    """A tasks-queue message. `task`, the task's definition, spares its consumer two reads;
    `spent`, on a retry, is what the earlier attempts of the task's run cost."""
    body: dict[str, Any] = {"buildId": build_id, "taskId": task_id, "attempt": attempt}
    if spent is not None:
        body["spent"] = spent
    text = json.dumps(body)
    if task is not None:
        with_task = json.dumps({**body, "task": task}, separators=(",", ":"))
        if len(with_task) <= _MAX_EMBEDDED_TASK:
            text = with_task
    entry: dict[str, Any] = {"Id": f"m{idx}", "MessageBody": text}
    if delay_s > 0:
        entry["DelaySeconds"] = min(int(delay_s), 900)
    return entry


def finished_message(body: dict[str, Any], dedup_id: str, *, idx: int = 0) -> dict[str, Any]:
    """A message for the task-finished FIFO queue: one group per build keeps its dispatch serial.

    The deduplication id is scoped to the build: a queue that deduplicates queue-wide (the local
    runtime's) must not drop build B's "setup:1:completed" as a copy of build A's. Ids that SQS
    would refuse or that would have to be cut (and so could collide) are hashed instead.
    """
    dedup = f"{body['buildId']}:{dedup_id}"
    if not _DEDUP_ID.fullmatch(dedup):
        dedup = hashlib.sha256(dedup.encode()).hexdigest()
    return {
        "Id": f"m{idx}",
        "MessageBody": json.dumps(body, separators=(",", ":")),
        "MessageGroupId": body["buildId"],
        "MessageDeduplicationId": dedup,
    }


_DEDUP_ID = re.compile(r"[\x21-\x7e]{1,128}")  # what SQS accepts: 1-128 printable ASCII characters
