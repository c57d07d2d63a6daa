"""A plan at MAX_PLAN_TASKS, every field at its limit, through the real local runtime: it completes,
nothing it writes comes near a service's size limit, a webhook receiver and a WebSocket client get
every event, and one task more ends the build `plan_too_large` (never a storage error).

The limit-size build runs 1,000 zero-latency mock tasks (maxConcurrency 20) and delivers its ~3,000
events to a webhook and a WebSocket: minutes of CPU in one process (mostly the webhook deliveries on
moto), so it carries the `slow` marker (CI runs it; `-m "not slow"` skips it while developing).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from werkzeug import Request, Response

from local.runtime import LocalRuntime
from local.sizes import SizeProbe, limit_plan
from shared.models.events import MAX_EVENT_BYTES
from shared.models.plan import MAX_PLAN_TASKS
from tests.helpers import wait_for

pytestmark = pytest.mark.e2e

USER = "dev"
MAX_ITEM_BYTES = 100 * 1024  # DynamoDB allows 400 KB: every item stays a quarter of that
MAX_MESSAGE_BYTES = 256 * 1024  # an SQS message and an EventBridge Pipes event
TERMINAL = ("build_completed", "build_failed", "build_cancelled")


class LiveClient(threading.Thread):
    """A page watching the build over `/ws` from its first event: keeps every event by seq and the
    largest frame."""

    def __init__(self, url: str, build_id: str) -> None:
        super().__init__(daemon=True)
        self.url, self.build_id = url, build_id
        self.events: dict[int, dict[str, Any]] = {}
        self.largest_frame = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        from websockets.sync.client import connect

        try:
            with connect(self.url, open_timeout=30) as ws:
                ws.send(json.dumps({"action": "subscribe", "buildId": self.build_id, "after": 0}))
                while True:
                    raw = ws.recv(timeout=600)
                    self.largest_frame = max(self.largest_frame, len(raw.encode() if isinstance(raw, str) else raw))
                    frame = json.loads(raw)
                    assert frame["type"] not in ("error", "subscription_stopped"), frame
                    if "seq" in frame:
                        self.events[frame["seq"]] = frame
                        if frame["type"] in TERMINAL:
                            return
        except BaseException as exc:
            self.error = exc


class Receiver:
    """Keeps every event delivered, by seq."""

    def __init__(self) -> None:
        self.events: dict[int, dict[str, Any]] = {}
        self.lock = threading.Lock()

    def __call__(self, request: Request) -> Response:
        event = json.loads(request.get_data())
        with self.lock:
            self.events[event["seq"]] = event
        return Response(status=204)


@pytest.fixture(scope="module")
def live_url() -> Iterator[str]:
    """`stepwise serve`'s HTTP and WebSocket app on uvicorn in this process (the runtime's own
    stream relay feeds it), so the test sees every call the build makes."""
    import uvicorn

    from local.server import app
    from tests.e2e.conftest import free_port

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_for(lambda: server.started, timeout=30, what="uvicorn")
    yield f"ws://127.0.0.1:{port}/ws?token=dev-token"
    server.should_exit = True
    thread.join(10)


@pytest.fixture(scope="module")
def runtime(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LocalRuntime, Path]]:
    from shared.logic import webhooks
    from shared.webhooks.delivery import EndpointRateLimiter

    script = tmp_path_factory.mktemp("big") / "script.json"
    script.write_text("{}")
    # 3,000 events at the contract's 20 requests/s per endpoint would take 150 s: the test receiver
    # takes them as fast as they come (sizes are under test here, not the rate limit)
    saved, webhooks._limiter = webhooks._limiter, EndpointRateLimiter(rate_per_s=10_000)
    with LocalRuntime(env={
        "STEPWISE_MOCK_SCRIPT": str(script), "WEBHOOK_ALLOWED_HOSTS": "127.0.0.1",
        "WEBHOOK_BACKOFF_BASE_SECONDS": "0", "TASK_CACHE_TTL_SECONDS": "0",
    }) as rt:
        yield rt, script
    webhooks._limiter = saved


def _use(script: Path, tasks: list[dict[str, Any]]) -> None:
    from shared.logic.services import reset_services
    from shared.providers.factory import reset_providers

    script.write_text(json.dumps({"plan": {"tasks": tasks, "chunk_chars": 8192}, "default_task": {"delay_ms": 0}}))
    reset_providers()
    reset_services()


def _events(rt: LocalRuntime, build_id: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    while True:
        code, page = rt.invoke_api(
            "GET", f"/builds/{build_id}/events", user=USER, query={"after": str(len(out)), "limit": "1000"}
        )
        assert code == 200, page
        out += page["events"]
        if not page["events"] or page["next"] is None:
            return out


def _ended(rt: LocalRuntime, build_id: str, timeout: float) -> dict[str, Any]:
    """The build's view once it has ended (polled on its status alone: the view of a big plan is big)."""
    from shared.logic.services import services

    def probe() -> bool:
        build = services().builds.get(build_id, attributes=["status"])
        status = build.status if build else None
        return status not in ("planning", "awaiting_approval", "executing")

    wait_for(probe, timeout=timeout, interval=0.5, what=f"the end of {build_id}")
    code, view = rt.invoke_api("GET", f"/builds/{build_id}", user=USER)
    assert code == 200, view
    return dict(view)


@pytest.mark.slow
def test_a_plan_at_the_limit_completes_within_every_size_bound(runtime, live_url, httpserver) -> None:
    rt, script = runtime
    receiver = Receiver()
    httpserver.expect_request("/hook", method="POST").respond_with_handler(receiver)
    url = str(httpserver.url_for("/hook")).replace("localhost", "127.0.0.1")
    tasks = limit_plan(MAX_PLAN_TASKS, "big")
    _use(script, tasks)
    probe = SizeProbe().attach()
    try:
        code, created = rt.invoke_api(
            "POST", "/builds", user=USER, body={"prompt": "big plan", "maxConcurrency": 20, "webhookUrl": url}
        )
        assert code == 202, created
        build_id = created["buildId"]
        page = LiveClient(live_url, build_id)
        page.start()
        view = _ended(rt, build_id, timeout=600)
        events = _events(rt, build_id)
        # every event reaches the webhook receiver, exactly as recorded
        wait_for(lambda: len(receiver.events) >= len(events), timeout=600, interval=0.5, what="every delivery")
        page.join(120)
    finally:
        probe.detach()
    probe.measure_updates()

    assert view["status"] == "completed", view.get("message")
    assert view["metrics"]["completedTasks"] == MAX_PLAN_TASKS
    assert [t["id"] for t in view["plan"]["tasks"]] == [t["id"] for t in tasks]  # the whole plan, from the API
    assert events[-1]["type"] == "build_completed"
    assert receiver.events == {e["seq"]: e for e in events}
    assert page.error is None and page.events == {e["seq"]: e for e in events}
    assert page.largest_frame <= 128 * 1024  # API Gateway WebSocket's message limit

    # no event over the bound; the two that grow with the plan carry a prefix and say what they left out
    sizes = {e["seq"]: len(json.dumps(e)) for e in events}
    assert max(sizes.values()) <= MAX_EVENT_BYTES
    [generated] = [e["data"] for e in events if e["type"] == "plan_generated"]
    assert generated["taskCount"] == MAX_PLAN_TASKS and generated["truncated"] is True
    assert 0 < len(generated["tasks"]) < MAX_PLAN_TASKS
    assert generated["tasksOmitted"] == MAX_PLAN_TASKS - len(generated["tasks"])
    assert [t["id"] for t in generated["tasks"]] == [t["id"] for t in tasks[: len(generated["tasks"])]]
    assert generated["tasks"][0]["description"] == tasks[0]["description"]  # cut by count, never mid-task
    completed = events[-1]["data"]
    code, files = rt.invoke_api("GET", f"/builds/{build_id}/files", user=USER)
    assert code == 200 and completed["truncated"] is True
    assert completed["files"] == [f["path"] for f in files][: len(completed["files"])]
    assert completed["filesOmitted"] == len(files) - len(completed["files"]) > 0

    # no DynamoDB item and no SQS message anywhere near its service's limit
    assert probe.item.bytes < MAX_ITEM_BYTES, probe.item
    assert probe.message.bytes < MAX_MESSAGE_BYTES, probe.message
    print(f"largest item {probe.item}, message {probe.message}, event {max(sizes.values())} bytes")


def test_one_task_over_the_limit_fails_the_build_plan_too_large(runtime) -> None:
    rt, script = runtime
    _use(script, limit_plan(MAX_PLAN_TASKS + 1, "over"))
    code, created = rt.invoke_api("POST", "/builds", user=USER, body={"prompt": "one task too many"})
    assert code == 202, created
    view = _ended(rt, created["buildId"], timeout=120)
    events = _events(rt, created["buildId"])
    assert view["status"] == "failed" and view["failureReason"] == "plan_too_large"
    assert view["plan"] is None  # nothing of it was stored
    last = events[-1]
    assert last["type"] == "build_failed" and last["data"]["reason"] == "plan_too_large"
    assert f"{MAX_PLAN_TASKS:,} tasks" in last["data"]["message"] and "MAX_PLAN_TASKS" in last["data"]["message"]
    # the stream stopped at the task over the limit: the first MAX_PLAN_TASKS were shown, no more
    assert sum(e["type"] == "plan_partial" for e in events) == MAX_PLAN_TASKS
