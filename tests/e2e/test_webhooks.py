"""Webhook delivery end to end: signed, retried, dead-lettered and redriven, never lost."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from standardwebhooks import Webhook
from werkzeug import Request, Response

from local.runtime import LocalRuntime
from shared.signing import generate_secret
from tests.helpers import wait_for

pytestmark = pytest.mark.e2e

SECRET_OLD, SECRET_NEW = generate_secret(), generate_secret()


class Receiver:
    """Records every request; answers with whatever `plan(n)` says for the n-th request of an event."""

    def __init__(self) -> None:
        self.requests: list[tuple[bytes, dict[str, str]]] = []
        self.per_event: dict[str, int] = {}
        self.lock = threading.Lock()
        self.plan = lambda n: 204

    def __call__(self, request: Request) -> Response:
        body = request.get_data()
        headers = {k.lower(): v for k, v in request.headers.items()}
        with self.lock:
            self.requests.append((body, headers))
            n = self.per_event[headers["webhook-id"]] = self.per_event.get(headers["webhook-id"], 0) + 1
        status = self.plan(n)
        if status in (301, 302, 307):
            return Response(status=status, headers={"Location": "/elsewhere"})
        return Response(status=status)


@pytest.fixture(scope="module")
def runtime(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalRuntime]:
    script = tmp_path_factory.mktemp("hooks") / "script.json"
    script.write_text(json.dumps({"plan": {"tasks": [
        {"id": "one", "type": "create_file", "name": "One", "input": {"targetPath": "one.txt"}},
        {"id": "two", "type": "create_file", "name": "Two", "input": {"targetPath": "two.txt", "dependencies": ["one"]}},
    ]}, "default_task": {"delay_ms": 0}}))
    with LocalRuntime(aws_port=0, env={
        "STEPWISE_MOCK_SCRIPT": str(script), "WEBHOOK_SECRET": f"{SECRET_NEW} {SECRET_OLD}",
        "WEBHOOK_ALLOWED_HOSTS": "127.0.0.1", "WEBHOOK_MAX_ATTEMPTS": "3", "WEBHOOK_BACKOFF_BASE_SECONDS": "0",
    }) as rt:
        yield rt


@pytest.fixture
def receiver(httpserver: Any) -> Receiver:
    r = Receiver()
    httpserver.expect_request("/hook", method="POST").respond_with_handler(r)
    return r


def _url(httpserver: Any) -> str:
    return str(httpserver.url_for("/hook")).replace("localhost", "127.0.0.1")


def _build(rt: LocalRuntime, url: str) -> tuple[str, list[dict[str, Any]]]:
    code, body = rt.invoke_api("POST", "/builds", user="dev", body={"prompt": "hooks", "webhookUrl": url})
    assert code == 202, body
    build_id = body["buildId"]
    for _ in range(600):
        code, page = rt.invoke_api("GET", f"/builds/{build_id}/events", user="dev", query={"limit": "1000"})
        if page["events"] and page["events"][-1]["type"].startswith("build_") and page["events"][-1]["seq"] > 1:
            return build_id, page["events"]
        time.sleep(0.05)
    raise AssertionError("build did not finish")


def _settled(build_id: str, expect: dict[str, int] | None = None, timeout: float = 60) -> dict[str, int]:
    """Delivery states once nothing is pending (or once they equal `expect`)."""
    from shared.logic.webhooks import delivery_summary

    deadline = time.monotonic() + timeout
    counts: dict[str, int] = {}
    while time.monotonic() < deadline:
        counts = delivery_summary(build_id)
        if counts == expect or (expect is None and not counts.get("pending")):
            return counts
        time.sleep(0.05)
    return counts


def _ids(receiver: Receiver) -> dict[str, set[bytes]]:
    out: dict[str, set[bytes]] = {}
    for body, headers in receiver.requests:
        out.setdefault(headers["webhook-id"], set()).add(body)
    return out


def test_retries_until_delivered_same_content_and_rotated_secrets_verify(runtime, receiver, httpserver) -> None:
    receiver.plan = lambda n: 500 if n <= 2 else 200  # fail the first two attempts of every event
    build_id, events = _build(runtime, _url(httpserver))
    counts = _settled(build_id)
    assert counts == {"delivered": len(events)}
    by_id = _ids(receiver)
    assert set(by_id) == {e["id"] for e in events}
    assert all(len(bodies) == 1 for bodies in by_id.values())  # a retry never changes the content
    assert all(receiver.per_event[e["id"]] == 3 for e in events)
    for body, headers in receiver.requests:  # both the new and the old secret verify (rotation)
        assert Webhook(SECRET_NEW).verify(body, headers)["id"] == headers["webhook-id"]
        assert Webhook(SECRET_OLD).verify(body, headers)["id"] == headers["webhook-id"]
        assert len(headers["webhook-signature"].split(" ")) == 2
        assert headers["x-webhook-timestamp"].isdigit() and len(headers["x-webhook-signature"]) == 64


def test_tampered_or_stale_deliveries_fail_verification(runtime, receiver, httpserver) -> None:
    from standardwebhooks.webhooks import WebhookVerificationError

    build_id, _ = _build(runtime, _url(httpserver))
    _settled(build_id)
    body, headers = receiver.requests[0]
    with pytest.raises(WebhookVerificationError):
        Webhook(SECRET_NEW).verify(body.replace(b'"seq"', b'"seq" '), headers)
    stale = dict(headers, **{"webhook-timestamp": str(int(headers["webhook-timestamp"]) - 3600)})
    with pytest.raises(WebhookVerificationError):
        Webhook(SECRET_NEW).verify(body, stale)


def test_dead_letter_after_last_attempt_then_redrive_delivers(runtime, receiver, httpserver) -> None:
    from local.dlq import list_dead, redrive, resolve

    receiver.plan = lambda n: 503
    build_id, events = _build(runtime, _url(httpserver))
    assert _settled(build_id) == {"dead": len(events)}
    assert all(receiver.per_event[e["id"]] == 3 for e in events)  # WEBHOOK_MAX_ATTEMPTS

    target = resolve(stack=None, queue_url=None, endpoint=runtime.aws_endpoint, region=None)
    dead = [d for d in list_dead(target, limit=500) if d.build_id == build_id]
    for _ in range(100):  # SQS moves each message on the receive after its last attempt
        if len(dead) == len(events):
            break
        time.sleep(0.1)
        dead = [d for d in list_dead(target, limit=500) if d.build_id == build_id]
    assert sorted(d.seq for d in dead) == [e["seq"] for e in events]

    receiver.plan = lambda n: 200
    moved: list[int] = []

    def all_redriven() -> bool:  # the peek above hid the messages for 2 s: each moves once visible
        moved.append(redrive(target))
        return sum(moved) >= len(events)

    wait_for(all_redriven, timeout=10, what="every dead delivery redriven")
    assert _settled(build_id, {"delivered": len(events)}) == {"delivered": len(events)}


def test_gone_stops_retries_and_redirects_are_not_followed(runtime, receiver, httpserver) -> None:
    receiver.plan = lambda n: 410
    build_id, events = _build(runtime, _url(httpserver))
    assert _settled(build_id) == {"gone": len(events)}
    assert all(receiver.per_event[e["id"]] == 1 for e in events)

    gone = len(receiver.requests)
    receiver.plan = lambda n: 302
    build_id, events = _build(runtime, _url(httpserver))
    assert _settled(build_id) == {"dead": len(events)}
    assert all(receiver.per_event[e["id"]] == 3 for e in events)
    assert len(receiver.requests) == gone + 3 * len(events)  # the Location was never requested
    assert not any(req.path == "/elsewhere" for req, _ in httpserver.log)


def test_ssrf_targets_are_refused(runtime) -> None:
    for url in ("http://169.254.169.254/latest/meta-data", "https://10.0.0.8/hook", "https://[::1]/hook",
                "http://localhost:9/hook", "https://user:pw@example.com/hook", "ftp://example.com/x"):
        code, body = runtime.invoke_api("POST", "/builds", user="dev", body={"prompt": "x", "webhookUrl": url})
        assert code == 422, url
        assert body["error"]["details"][0]["field"] == "webhookUrl"


def test_a_hostname_resolving_to_loopback_is_refused_at_delivery(runtime, monkeypatch) -> None:
    import socket

    real = socket.getaddrinfo

    def fake(host, *args, **kwargs):  # type: ignore[no-untyped-def]
        if host == "hooks.example.test":
            return real("127.0.0.1", *args, **kwargs)
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", fake)
    code, body = runtime.invoke_api("POST", "/builds", user="dev",
                                    body={"prompt": "x", "webhookUrl": "https://hooks.example.test/hook"})
    assert code == 422 and "webhookUrl" in body["error"]["message"]


def test_recorded_event_is_delivered_even_if_the_relay_died_before_queueing_it(runtime, receiver, httpserver) -> None:
    """Crash injected between recording and enqueueing: the outbox (the events stream) still delivers."""
    from local.pollers import StreamRelay

    old = runtime.relay
    assert old is not None
    old.stop()
    old.join()
    build_id, events = _build(runtime, _url(httpserver))
    time.sleep(0.3)
    assert not any(h["webhook-id"] in {e["id"] for e in events} for _, h in receiver.requests)
    runtime.relay = StreamRelay(old.stream_arn, old.queue_url)  # the process comes back
    runtime.relay.start()
    assert _settled(build_id) == {"delivered": len(events)}
    assert set(_ids(receiver)) >= {e["id"] for e in events}


def test_dlq_cli_lists_the_running_serve(runtime, tmp_path: Path) -> None:
    from tests.e2e.conftest import run_stepwise

    result = run_stepwise(["dlq", "list", "--endpoint", str(runtime.aws_endpoint), "--json"])
    assert result.returncode == 0, result.stderr
    for line in result.stdout.splitlines():
        assert json.loads(line)["event_id"].startswith("evt_")


def test_a_receiver_ordering_by_seq_sees_a_task_start_before_the_plan_is_stored(runtime, receiver, httpserver) -> None:
    """Tasks start while the plan streams: a consumer that orders by `seq` gets `task_started` (and
    the task's outcome) before `plan_generated`, and folds the same end state as the event log."""
    import os

    from shared.logic.services import reset_services
    from shared.providers.factory import reset_providers

    script = Path(os.environ["STEPWISE_MOCK_SCRIPT"])
    before = script.read_text()
    plan = json.loads(before)["plan"]["tasks"] + [
        {"id": f"more{i}", "type": "create_file", "name": f"More {i}", "input": {"targetPath": f"more{i}.txt"}}
        for i in range(4)
    ]
    script.write_text(json.dumps({"plan": {"tasks": plan, "chunk_chars": 40, "chunk_delay_ms": 15},
                                  "default_task": {"delay_ms": 0}}))
    reset_providers()
    reset_services()
    try:
        build_id, events = _build(runtime, _url(httpserver))
    finally:
        script.write_text(before)
        reset_providers()
        reset_services()
    assert _settled(build_id) == {"delivered": len(events)}
    delivered = sorted((json.loads(next(iter(bodies))) for bodies in _ids(receiver).values()), key=lambda e: e["seq"])
    delivered = [e for e in delivered if e["buildId"] == build_id]
    assert [e["id"] for e in delivered] == [e["id"] for e in events]
    seq = {(e["type"], e["data"].get("taskId")): e["seq"] for e in delivered}
    assert seq[("task_started", "one")] < seq[("plan_generated", None)]
    status: dict[str, str] = {}
    for e in delivered:  # what a consumer keeps: the latest state of each task, in seq order
        if e["type"] == "task_started":
            status[e["data"]["taskId"]] = "running"
        elif e["type"] == "task_completed":
            status[e["data"]["taskId"]] = "completed"
    assert status == {t["id"]: "completed" for t in plan}
