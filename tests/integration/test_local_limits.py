"""The local runtime behaves as Lambda at a function's time limit, and a task message is kept
invisible by its consumer's lease (so a crash brings it back within one lease)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from local import invocations
from local.pollers import SqsPoller
from shared import limits, resources
from shared.dal.aws import client
from shared.dal.queues import Lease
from tests.helpers import wait_for
from tests.integration.quiet import QuietRuntime


@pytest.fixture(scope="module")
def quiet() -> Iterator[QuietRuntime]:
    with QuietRuntime() as runtime:
        yield runtime


def _queue(name: str, visibility_s: int) -> tuple[str, str]:
    sqs = client("sqs")
    url = sqs.create_queue(QueueName=name, Attributes={"VisibilityTimeout": str(visibility_s)})["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    return url, arn


def test_a_handler_past_its_time_limit_is_abandoned_and_reaches_aws_no_more(quiet: QuietRuntime) -> None:
    url, arn = _queue("limits-slow", visibility_s=2)
    out_url, _ = _queue("limits-out", visibility_s=30)
    sqs = client("sqs")
    sqs.send_message(QueueUrl=url, MessageBody=json.dumps({"n": 1}))
    calls: list[int] = []
    release = __import__("threading").Event()

    def slow(event: dict[str, Any], context: Any) -> dict[str, Any]:
        calls.append(int(event["Records"][0]["attributes"]["ApproximateReceiveCount"]))
        if len(calls) == 1:
            release.wait(30)  # still running when its time limit passes
            client("sqs").send_message(QueueUrl=out_url, MessageBody="late")  # must never arrive
        return {"batchItemFailures": []}

    poller = SqsPoller("slow", url, arn, lambda: slow, function_name="slow", timeout_s=0.5)
    poller.start()
    try:
        # abandoned at its limit; its message, not deleted, comes back once its visibility ends
        wait_for(lambda: len(calls) >= 2, timeout=30, what="the message to come back")
        assert poller.abandoned == 1 and calls == [1, 2]
        release.set()
        wait_for(lambda: not poller.inflight, timeout=10, what="the poller to go idle")
        resp = sqs.receive_message(QueueUrl=out_url, WaitTimeSeconds=1)
        assert resp.get("Messages") is None  # what it did after its time limit never left it
        # the second run succeeded: the message is gone
        assert sqs.receive_message(QueueUrl=url, WaitTimeSeconds=0, VisibilityTimeout=0).get("Messages") is None
    finally:
        release.set()
        poller.stop()
        poller.join()


def test_a_killed_invocation_makes_no_call_from_any_of_its_threads(quiet: QuietRuntime) -> None:
    url, _ = _queue("limits-kill", visibility_s=30)
    outcome = invocations.invoke(
        lambda event, context: _kill_then_send(url), {}, type("Ctx", (), {"function_name": "f"})(), timeout_s=10
    )
    assert isinstance(outcome.error, invocations.InvocationKilled)
    assert client("sqs").receive_message(QueueUrl=url, WaitTimeSeconds=0).get("Messages") is None


def _kill_then_send(url: str) -> None:
    invocation = invocations.current.get()
    assert invocation is not None
    invocation.kill()
    client("sqs").send_message(QueueUrl=url, MessageBody="after the kill")


def test_a_task_message_is_held_by_a_lease_and_returns_within_one_when_its_consumer_dies(quiet: QuietRuntime) -> None:
    url, _ = _queue("limits-lease", visibility_s=600)  # the deployed 6x-timeout visibility
    sqs = client("sqs")
    sqs.send_message(QueueUrl=url, MessageBody="work")
    [m] = sqs.receive_message(QueueUrl=url)["Messages"]
    lease = Lease(url, m["ReceiptHandle"], lease_s=1)
    with lease.held():
        # held while the work runs, past the lease itself: the consumer renews it
        assert sqs.receive_message(QueueUrl=url, WaitTimeSeconds=2).get("Messages") is None
    # the consumer "dies" (nothing renews it, nothing deletes it): it is back within one lease, not 600 s
    back = wait_for(lambda: sqs.receive_message(QueueUrl=url, WaitTimeSeconds=1).get("Messages"), timeout=10)
    assert back[0]["Body"] == "work"


def test_the_crash_recovery_bound_follows_the_task_timeout() -> None:
    # deployed defaults: a 30 s lease, an attempt surely dead 90 s after it started; the queue's own
    # visibility (what a crash cost before the lease) is 720 s
    assert limits.task_lease_s(60) == 30
    assert limits.crash_recovery_bound_s(60) == 92
    assert resources.queue_visibility_s("tasks", 60) == 720
    assert limits.concurrent_tasks(limits.FUNCTION_MEMORY_MB["task"]) == 8


def test_an_api_call_past_its_time_limit_answers_504_and_its_late_writes_never_land(
    quiet: QuietRuntime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As on AWS, an API call is stopped at its function's limit: a call that started a build's
    execution and has yet to commit can never commit after the wait the execution gives it."""
    from local.apigw import proxy_event
    from local.runtime import call_api
    from shared.logic import builds

    url, _ = _queue("limits-api", visibility_s=30)
    release = __import__("threading").Event()

    def slow(*args: Any, **kwargs: Any) -> Any:
        release.wait(30)  # still running when its time limit passes
        client("sqs").send_message(QueueUrl=url, MessageBody="late")  # must never arrive
        raise AssertionError("unreachable")

    monkeypatch.setattr(builds, "list_builds", slow)
    try:
        result = call_api(proxy_event("GET", "/builds", user="user-1"), timeout_s=0.5)
        assert result["statusCode"] == 504
    finally:
        release.set()
    assert client("sqs").receive_message(QueueUrl=url, WaitTimeSeconds=1).get("Messages") is None
