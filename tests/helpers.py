"""Builders shared by the test tiers: plan tasks, SQS events, polling with a deadline."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from shared.clock import Clock

T = TypeVar("T")

REGION = "us-east-1"
ACCOUNT = "123456789012"


def task(
    task_id: str,
    *deps: str,
    priority: int = 5,
    duration: float = 10.0,
    type: str = "create_file",
    target: str | None = None,
    name: str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """A plan task as the LLM writes it (docs/plans.md#a-task)."""
    data: dict[str, Any] = {
        "id": task_id,
        "type": type,
        "name": name or f"Task {task_id}",
        "description": f"Do {task_id}",
        "estimatedDuration": duration,
        "priority": priority,
        "input": {"prompt": f"write {task_id}", "dependencies": list(deps)},
    }
    if target is not None:
        data["input"]["targetPath"] = target
    data.update(extra)
    return data


def wait_for(
    probe: Callable[[], T | None], *, timeout: float = 60.0, interval: float = 0.05, what: str = "condition"
) -> T:
    """Poll `probe` until it returns something truthy; fail (not hang) after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(interval)


def sqs_record(
    body: dict[str, Any] | str,
    queue_arn: str,
    *,
    receive_count: int = 1,
    group_id: str | None = None,
    dedup_id: str | None = None,
    message_id: str | None = None,
) -> dict[str, Any]:
    """One record of an SQS → Lambda event, as the Lambda service delivers it."""
    attributes: dict[str, Any] = {
        "ApproximateReceiveCount": str(receive_count),
        "SentTimestamp": str(int(time.time() * 1000)),
        "SenderId": "AIDAEXAMPLE",
        "ApproximateFirstReceiveTimestamp": str(int(time.time() * 1000)),
    }
    if group_id is not None:
        attributes.update(
            {
                "MessageGroupId": group_id,
                "MessageDeduplicationId": dedup_id or str(uuid.uuid4()),
                "SequenceNumber": str(int(time.time() * 1e6)),
            }
        )
    text = body if isinstance(body, str) else json.dumps(body)
    return {
        "messageId": message_id or str(uuid.uuid4()),
        "receiptHandle": f"rh-{uuid.uuid4()}",
        "body": text,
        "attributes": attributes,
        "messageAttributes": {},
        "md5OfBody": "",
        "eventSource": "aws:sqs",
        "eventSourceARN": queue_arn,
        "awsRegion": REGION,
    }


def sqs_event(records: Iterable[dict[str, Any]]) -> dict[str, Any]:
    return {"Records": list(records)}


def drain_queue(sqs: Any, queue_url: str) -> list[dict[str, Any]]:
    """Receive (and delete) every message now on a queue; return the parsed bodies."""
    bodies: list[dict[str, Any]] = []
    while True:
        resp = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=0, VisibilityTimeout=300)
        messages = resp.get("Messages") or []
        if not messages:
            return bodies
        for m in messages:
            bodies.append(json.loads(m["Body"]))
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=m["ReceiptHandle"])


class ShiftedClock(Clock):
    """The system's time plus an offset a test moves on (`advance`), instead of sleeping while the
    code under test waits for time to pass. Sleeps stay real: other threads must get to run."""

    def __init__(self) -> None:
        self.offset = 0.0
        self._lock = threading.Lock()

    def advance(self, seconds: float) -> None:
        with self._lock:
            self.offset += max(0.0, seconds)

    def time(self) -> float:
        return time.time() + self.offset

    def monotonic(self) -> float:
        return time.monotonic() + self.offset


# --- fakes for the vendors' HTTP clients ------------------------------------------------------------
class FakeClock:
    """Time that only moves when the provider sleeps: retries are instant and deterministic."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


class ReplayServer:
    """A mock transport's handler: replays one reply (a response, or a function of the request)
    per request and records what the client sent. Works for httpx and httpx2 alike."""

    def __init__(self, *replies: Any) -> None:
        self.replies = list(replies)
        self.requests: list[Any] = []

    def __call__(self, request: Any) -> Any:
        self.requests.append(request)
        reply = self.replies.pop(0)
        return reply(request) if callable(reply) else reply

    def body(self, i: int = 0) -> dict[str, Any]:
        return json.loads(self.requests[i].content)  # type: ignore[no-any-return]


def chunks(text: str, size: int) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)]


def task_context(**kw: Any) -> Any:
    """A provider TaskContext for the "hero" task, with any field overridden."""
    from shared.providers.base import TaskContext

    base: dict[str, Any] = {
        "build_id": "b1",
        "task_id": "hero",
        "task_type": "create_component",
        "task_name": "Hero",
        "deadline_s": 60.0,
    }
    return TaskContext(**{**base, **kw})
