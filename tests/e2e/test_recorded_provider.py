"""What each task is given, and what every call costs, seen from the provider's side.

A real HTTP server on 127.0.0.1 plays Anthropic: it speaks the Messages API's SSE wire format, is
reached by the real anthropic SDK through ANTHROPIC_BASE_URL, and records every request. A build runs
through the whole local runtime against it, so the test reads exactly what the model was sent, and
checks the build's cost against every call the server answered: the plan, a heal, replies with no
usable file, and a reply abandoned at the task's time limit.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from local.runtime import LocalRuntime
from tests.helpers import chunks, task, wait_for

pytestmark = pytest.mark.e2e

USER = "dev"
MODEL = "claude-sonnet-4-5-20250929"
INPUT_TOKENS, OUTPUT_TOKENS = 1000, 200
CALL_COST = (INPUT_TOKENS * 3.0 + OUTPUT_TOKENS * 15.0) / 1_000_000  # claude-sonnet-4-5's price
APP = "original line\n"
PACKAGE = '{\n  "name": "shop",\n  "dependencies": {"react": "19.0.0"}\n}\n'

PLAN = [
    task("edit1", type="modify_file", target="src/app.txt", name="First edit"),
    task("notes", "edit1", target="notes.txt", name="Notes"),
    # Its target was written by a task it does not name: it must still edit the current version.
    task("edit2", "notes", type="modify_file", target="src/app.txt", name="Second edit"),
    task("deps", type="install_deps", target="package.json", name="Add deps"),
    task("flaky", target="flaky.txt", name="Flaky"),
    task("slow", target="slow.txt", name="Slow"),
]
TASK_TIMEOUT_S = 4  # roomy: only the stalled reply may exceed it, even on a loaded machine
SLOW_START = "Working on it: this reply will take longer than the task may."
BROKEN = {"id": "extra", "type": "a kind of file", "name": "Extra", "input": {"targetPath": "extra.txt"}}
HEALED = task("extra", target="extra.txt", name="Extra")


def sse(text: str) -> bytes:
    return b"".join(sse_parts(text))


def sse_parts(text: str) -> list[bytes]:
    """The reply's SSE events, one encoded block each."""
    events: list[dict[str, Any]] = [
        {"type": "message_start", "message": {
            "id": "msg_1", "type": "message", "role": "assistant", "content": [], "model": MODEL,
            "stop_reason": None, "stop_sequence": None,
            "usage": {"input_tokens": INPUT_TOKENS, "cache_creation_input_tokens": 0,
                      "cache_read_input_tokens": 0, "output_tokens": 1}}},
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        *({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": c}}
          for c in chunks(text, 40)),
        {"type": "content_block_stop", "index": 0},
        {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None},
         "usage": {"output_tokens": OUTPUT_TOKENS}},
        {"type": "message_stop"},
    ]
    return [f"event: {e['type']}\ndata: {json.dumps(e)}\n\n".encode() for e in events]


def stalled(text: str) -> Iterator[bytes]:
    """A reply that starts (usage reported, some text streamed) and then stalls past the task's time
    limit: the call is abandoned while the vendor is still answering — and billed."""
    parts = sse_parts(text)
    yield from parts[:3]  # message_start, content_block_start, the first delta
    time.sleep(TASK_TIMEOUT_S + 2)
    yield from parts[3:]


class FakeAnthropic:
    """Plans PLAN; a task appends "<name> was here" to the current content of its target as it was
    shown; "Flaky" answers twice with no file block (a billed, unusable reply) before it complies."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.calls: Counter[str] = Counter()
        self._lock = threading.Lock()

    def __call__(self, request: Request) -> Response:
        body = request.get_json()
        system, user = body["system"][0]["text"], body["messages"][0]["content"]
        with self._lock:
            self.requests.append(body)
            if system.startswith("You are the planner"):  # one task written wrong: healed by a second call
                return Response(sse(json.dumps({"tasks": [*PLAN, BROKEN]})), content_type="text/event-stream")
            if system.startswith("You repair JSON"):
                return Response(sse(json.dumps(HEALED)), content_type="text/event-stream")
            name = re.search(r"^Task: (.+?) \(", user, re.M).group(1)  # type: ignore[union-attr]
            self.calls[name] += 1
            attempt = self.calls[name]
        target = re.search(r"^Target file: (.+)$", user, re.M).group(1)  # type: ignore[union-attr]
        if name == "Slow" and attempt == 1:
            return Response(stalled(SLOW_START), content_type="text/event-stream")
        if name == "Flaky" and attempt <= 2:
            return Response(sse("Sure! I would write the file like this, but in prose."),
                            content_type="text/event-stream")
        shown = shown_files(user).get(target, "")
        content = (shown.rstrip("\n") + "\n" if shown else "") + f"{name} was here\n"
        return Response(sse(f'<file path="{target}">\n{content}</file>\n'), content_type="text/event-stream")

    def task_requests(self, name: str) -> list[str]:
        return [r["messages"][0]["content"] for r in self.requests
                if re.search(rf"^Task: {re.escape(name)} \(", r["messages"][0]["content"], re.M)]


def shown_files(user: str) -> dict[str, str]:
    """The files a task prompt shows the model, by path."""
    found = re.finditer(r'<existing path="([^"]+)">\n(.*?)\n</existing>', user, re.S)
    return {m.group(1): m.group(2).rstrip("\n") for m in found}


@pytest.fixture(scope="module")
def fake() -> Iterator[tuple[FakeAnthropic, str]]:
    server = HTTPServer(host="127.0.0.1", port=0, threaded=True)
    server.start()
    handler = FakeAnthropic()
    server.expect_request("/v1/messages", method="POST").respond_with_handler(handler)
    try:
        yield handler, server.url_for("/")
    finally:
        server.clear()
        server.stop()


@pytest.fixture(scope="module")
def built(fake: tuple[FakeAnthropic, str]) -> Iterator[tuple[FakeAnthropic, LocalRuntime, str, list[dict[str, Any]]]]:
    handler, url = fake
    env = {
        "AI_PROVIDER": "anthropic",
        "ANTHROPIC_API_KEY": "sk-ant-test-key-0123456789",
        "ANTHROPIC_BASE_URL": url,
        "ANTHROPIC_MODEL": "claude-sonnet-4-5",
        "TASK_RETRY_BASE_SECONDS": "0",
        "TASK_MAX_ATTEMPTS": "3",
        "TASK_TIMEOUT_SECONDS": str(TASK_TIMEOUT_S),
    }
    with LocalRuntime(env=env) as rt:
        files = [{"path": "src/app.txt", "content": APP}, {"path": "package.json", "content": PACKAGE}]
        code, created = rt.invoke_api("POST", "/builds", user=USER,
                                      body={"prompt": "Edit the shop twice", "files": files})
        assert code == 202, created
        build_id = created["buildId"]

        def ended() -> list[dict[str, Any]] | None:
            events = rt.invoke_api("GET", f"/builds/{build_id}/events", user=USER,
                                   query={"after": "0", "limit": "1000"})[1]["events"]
            return events if any(e["type"].startswith("build_") and e["type"] != "build_started"
                                 for e in events) else None

        events = wait_for(ended, timeout=90, what="the build's end")
        yield handler, rt, build_id, events


def file_text(rt: LocalRuntime, build_id: str, path: str) -> str:
    code, body = rt.invoke_api("GET", f"/builds/{build_id}/files/{path}", user=USER)
    assert code == 200, body
    return body if isinstance(body, str) else body.decode() if isinstance(body, bytes) else json.dumps(body)


def test_the_build_completes(built) -> None:
    _, _, _, events = built
    assert events[-1]["type"] == "build_completed" and events[-1]["data"]["status"] == "completed", events[-1]


def test_two_modify_file_tasks_on_one_upload_both_take_effect(built) -> None:
    handler, rt, build_id, _ = built
    [first] = handler.task_requests("First edit")
    assert shown_files(first)["src/app.txt"] == APP.rstrip("\n")  # the upload, no task wrote it yet
    [second] = handler.task_requests("Second edit")
    # The second edit was given the first one's output, not the original upload.
    assert shown_files(second)["src/app.txt"] == "original line\nFirst edit was here"
    assert file_text(rt, build_id, "src/app.txt") == "original line\nFirst edit was here\nSecond edit was here\n"


def test_an_install_deps_task_is_given_the_uploaded_package_json(built) -> None:
    handler, rt, build_id, _ = built
    [request] = handler.task_requests("Add deps")
    assert shown_files(request)["package.json"] == PACKAGE.rstrip("\n")
    assert '"react": "19.0.0"' in file_text(rt, build_id, "package.json")  # its entries were kept


def test_every_task_is_given_every_uploaded_file(built) -> None:
    handler, *_ = built
    for name in ("First edit", "Notes", "Second edit", "Add deps", "Flaky", "Extra", "Slow"):
        shown = shown_files(handler.task_requests(name)[-1])
        assert {"src/app.txt", "package.json"} <= set(shown), name
    # and its dependencies' outputs
    assert "notes.txt" in shown_files(handler.task_requests("Second edit")[0])


def test_every_billed_call_is_counted_failed_attempts_and_the_plan_included(built) -> None:
    handler, rt, build_id, events = built
    assert handler.calls["Flaky"] == 3
    flaky = next(e for e in events if e["type"] == "task_completed" and e["data"]["taskId"] == "flaky")
    assert flaky["data"]["usage"]["promptTokens"] == 3 * INPUT_TOKENS
    assert flaky["data"]["usage"]["costUsd"] == pytest.approx(3 * CALL_COST)
    failed = [e for e in events if e["type"] == "task_failed" and e["data"]["taskId"] == "flaky"]
    assert [e["data"]["willRetry"] for e in failed] == [True, True]

    # The abandoned call: its input as reported, its output estimated from what had arrived.
    [timeout] = [e for e in events if e["type"] == "task_timeout" and e["data"]["taskId"] == "slow"]
    assert timeout["data"]["willRetry"]
    partial = SLOW_START[:40]  # the first delta
    abandoned = (INPUT_TOKENS * 3.0 + -(-len(partial) // 4) * 15.0) / 1_000_000
    slow = next(e for e in events if e["type"] == "task_completed" and e["data"]["taskId"] == "slow")
    assert slow["data"]["usage"]["costUsd"] == pytest.approx(abandoned + CALL_COST)
    from shared.logic.services import services

    assert services().tasks.get(build_id, "slow").usage.estimated is True  # and marked as such

    calls = len(handler.requests)  # the plan and its heal, one call per task, 2 + 1 more attempts
    assert calls == 2 + len(PLAN) + 1 + 3
    view = rt.invoke_api("GET", f"/builds/{build_id}", user=USER)[1]
    metrics = events[-1]["data"]["metrics"]
    for m in (view["metrics"], metrics):
        assert m["planCostUsd"] == pytest.approx(2 * CALL_COST)  # the plan and the heal call
        assert m["costUsd"] == pytest.approx((calls - 1) * CALL_COST + abandoned)
        assert m["promptTokens"] == calls * INPUT_TOKENS
