"""SQS: the tasks queue and the task-finished FIFO queue."""

from __future__ import annotations

import json
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


def task_message(build_id: str, task_id: str, attempt: int, *, delay_s: int = 0, idx: int = 0) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "Id": f"m{idx}",
        "MessageBody": json.dumps({"buildId": build_id, "taskId": task_id, "attempt": attempt}),
    }
    if delay_s > 0:
        entry["DelaySeconds"] = min(int(delay_s), 900)
    return entry


def finished_message(body: dict[str, Any], dedup_id: str, *, idx: int = 0) -> dict[str, Any]:
    """A message for the task-finished FIFO queue: one group per build keeps its dispatch serial."""
    return {
        "Id": f"m{idx}",
        "MessageBody": json.dumps(body, separators=(",", ":")),
        "MessageGroupId": body["buildId"],
        "MessageDeduplicationId": dedup_id[:128],
    }
