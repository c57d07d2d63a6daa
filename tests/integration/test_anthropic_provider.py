"""AnthropicProvider against Anthropic's real streaming wire format, offline.

The SDK talks to an httpx2.MockTransport that replays genuine Messages SSE sequences (message_start,
content_block_*, ping, message_delta, message_stop, error events and error bodies), and once to a
real HTTP server on 127.0.0.1 through the base-URL setting.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx2
import pytest
from pytest_httpserver import HTTPServer

from shared.providers.anthropic_provider import AnthropicProvider
from shared.providers.base import (
    MalformedTask,
    PlanContext,
    ProviderError,
    ProviderTimeout,
    TransformKind,
)
from shared.providers.retry import RetryPolicy
from tests.helpers import FakeClock, ReplayServer, chunks, task_context

MODEL_ID = "claude-sonnet-4-5-20250929"
TASKS = [
    {"id": "setup", "type": "setup_config", "name": "Configure \"Vite\" {app}", "priority": 0,
     "input": {"targetPath": "package.json", "dependencies": []}},
    {"id": "hero", "type": "create_component", "name": "Hero \u2603 section \U0001f680",
     "input": {"prompt": "Use \\n and [brackets] and }", "targetPath": "src/Hero.tsx",
               "dependencies": ["setup"]}},
    {"id": "page", "type": "create_file", "name": "Landing page",
     "input": {"targetPath": "src/App.tsx", "dependencies": ["hero"]}},
]
PLAN_TEXT = "Here is the plan:\n```json\n" + json.dumps({"tasks": TASKS}) + "\n```"


# -- the wire format ---------------------------------------------------------------------------


def sse(events: list[dict[str, Any]]) -> bytes:
    return "".join(f"event: {e['type']}\ndata: {json.dumps(e)}\n\n" for e in events).encode()


def message_events(deltas: list[str], *, input_tokens: int = 1200, output_tokens: int = 480,
                   cache_read: int = 2048, cache_write: int = 0, stop_reason: str = "end_turn",
                   complete: bool = True) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = [
        {"type": "message_start", "message": {
            "id": "msg_01XFDUDYJgAACzvnptvVoYEL", "type": "message", "role": "assistant", "content": [],
            "model": MODEL_ID, "stop_reason": None, "stop_sequence": None,
            "usage": {"input_tokens": input_tokens, "cache_creation_input_tokens": cache_write,
                      "cache_read_input_tokens": cache_read, "output_tokens": 1}}},
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        {"type": "ping"},
    ]
    events += [{"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": d}}
               for d in deltas]
    if complete:
        events += [
            {"type": "content_block_stop", "index": 0},
            {"type": "message_delta", "delta": {"stop_reason": stop_reason, "stop_sequence": None},
             "usage": {"output_tokens": output_tokens}},
            {"type": "message_stop"},
        ]
    return events


def ok(events: list[dict[str, Any]]) -> httpx2.Response:
    return httpx2.Response(200, headers={"content-type": "text/event-stream", "request-id": "req_1"},
                           content=sse(events))


def error(status: int, error_type: str, message: str,
          headers: dict[str, str] | None = None) -> httpx2.Response:
    body = {"type": "error", "error": {"type": error_type, "message": message}}
    return httpx2.Response(status, headers={"content-type": "application/json", **(headers or {})},
                           json=body)


def make_provider(server: ReplayServer, clock: FakeClock | None = None, **retry: Any) -> AnthropicProvider:
    clock = clock or FakeClock()
    policy = RetryPolicy(sleep=clock.sleep, clock=clock.clock, jitter=False, base_s=0.5, **retry)
    client = httpx2.Client(transport=httpx2.MockTransport(server))
    return AnthropicProvider("sk-ant-test", "claude-sonnet-4-5", http_client=client, retry=policy)


def plan(provider: AnthropicProvider) -> tuple[list[Any], Any]:
    stream = provider.plan_stream("a landing page", PlanContext(build_id="b1", framework="react"))
    return list(stream), stream


# -- plan streaming ----------------------------------------------------------------------------


def test_plan_streams_tasks_in_order_with_usage_cost_and_a_cached_system_prompt() -> None:
    server = ReplayServer(ok(message_events(chunks(PLAN_TEXT, 16))))
    items, stream = plan(make_provider(server))

    assert items == TASKS
    assert stream.attempts == 1
    # 1200 uncached input, 2048 cache reads, 480 output at Sonnet 4.5 prices ($3 / $0.30 / $15).
    assert stream.usage.promptTokens == 1200 + 2048
    assert stream.usage.completionTokens == 480
    assert stream.usage.cacheReadTokens == 2048
    assert stream.usage.costUsd == pytest.approx((1200 * 3 + 2048 * 0.3 + 480 * 15) / 1e6)

    sent = server.body()
    assert sent["stream"] is True and sent["model"] == "claude-sonnet-4-5"
    assert sent["system"][0]["cache_control"] == {"type": "ephemeral"}
    assert "JSON" in sent["system"][0]["text"]
    assert "a landing page" in sent["messages"][0]["content"]
    assert server.requests[0].headers["authorization"] == "Bearer sk-ant-test"  # SDK 2.x auth


def test_tasks_are_yielded_before_the_stream_ends() -> None:
    seen_before_end: list[int] = []
    payload = json.dumps({"tasks": TASKS})

    def body() -> Iterator[bytes]:
        events = message_events(chunks(payload, 9))
        for event in events:
            if event["type"] == "message_delta":
                seen_before_end.append(len(received))
            yield sse([event])

    received: list[Any] = []
    server = ReplayServer(lambda _r: httpx2.Response(200, headers={"content-type": "text/event-stream"},
                                               content=body()))
    for item in make_provider(server).plan_stream("x", PlanContext(build_id="b1")):
        received.append(item)
    assert seen_before_end == [len(TASKS)]


def test_deltas_and_http_chunks_split_mid_token_mid_escape_and_mid_utf8() -> None:
    payload = json.dumps({"tasks": TASKS}, ensure_ascii=False)  # raw multi-byte characters
    raw = sse(message_events(chunks(payload, 3)))

    def odd_chunks() -> Iterator[bytes]:
        for i in range(0, len(raw), 7):  # byte boundaries fall inside UTF-8 sequences and SSE lines
            yield raw[i:i + 7]

    server = ReplayServer(lambda _r: httpx2.Response(200, headers={"content-type": "text/event-stream"},
                                               content=odd_chunks()))
    items, _ = plan(make_provider(server))
    assert items == TASKS


def test_malformed_task_in_the_middle_is_reported_and_the_others_survive() -> None:
    text = ('{"tasks": [{"id": "a", "type": "create_file", "name": "A"},\n'
            ' {"id": "b", "type": create_file, "name": "B",},\n'
            ' {"id": "c", "type": "create_file", "name": "C"}]}')
    items, stream = plan(make_provider(ReplayServer(ok(message_events(chunks(text, 11))))))
    assert [i["id"] if isinstance(i, dict) else "malformed" for i in items] == ["a", "malformed", "c"]
    assert items[1].raw == '{"id": "b", "type": create_file, "name": "B",}'
    assert stream.attempts == 1


def test_truncated_stream_gives_the_tasks_so_far_and_the_fragment() -> None:
    text = json.dumps({"tasks": TASKS})
    cut = text.index('"id": "page"') + 20
    events = message_events(chunks(text[:cut], 10), complete=False)  # the connection just ends
    items, stream = plan(make_provider(ReplayServer(ok(events))))
    assert items[:2] == TASKS[:2]
    assert isinstance(items[2], MalformedTask)
    assert items[2].raw == text[text.index('{"id": "page"'):cut]
    assert stream.usage.promptTokens == 1200 + 2048  # message_start's counts still count
    # The final output count never came: what was received is billed, as an estimate.
    assert stream.usage.completionTokens == -(-cut // 4)
    assert stream.usage.estimated


def test_max_tokens_stop_gives_a_healable_fragment() -> None:
    text = json.dumps({"tasks": TASKS})[:-40]
    items, stream = plan(make_provider(ReplayServer(ok(message_events([text], stop_reason="max_tokens")))))
    assert items[:2] == TASKS[:2]
    assert isinstance(items[-1], MalformedTask)
    assert stream.usage.completionTokens == 480


def test_429_with_retry_after_then_success() -> None:
    clock = FakeClock()
    server = ReplayServer(error(429, "rate_limit_error", "Number of request tokens has exceeded your rate limit",
                          {"retry-after": "7"}),
                    ok(message_events(chunks(PLAN_TEXT, 50))))
    items, stream = plan(make_provider(server, clock))
    assert items == TASKS
    assert stream.attempts == 2
    assert len(server.requests) == 2
    assert clock.sleeps == [7.0]  # the server's hint, not our backoff


def test_529_overloaded_is_retried_with_backoff() -> None:
    clock = FakeClock()
    overloaded = error(529, "overloaded_error", "Overloaded")
    server = ReplayServer(overloaded, overloaded, ok(message_events([PLAN_TEXT])))
    items, stream = plan(make_provider(server, clock))
    assert items == TASKS
    assert stream.attempts == 3
    assert clock.sleeps == [0.5, 1.0]  # exponential, jitter off in tests


def test_overloaded_error_event_before_any_text_is_retried() -> None:
    mid_stream_error = [*message_events([], complete=False)[:1],
                        {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}]
    server = ReplayServer(ok(mid_stream_error), ok(message_events([PLAN_TEXT], input_tokens=10, cache_read=0)))
    items, stream = plan(make_provider(server))
    assert items == TASKS
    assert stream.attempts == 2
    # Both attempts' input was billed: the failed one reported 1200 + 2048 at message_start.
    assert stream.usage.promptTokens == 1200 + 2048 + 10


def test_failure_after_tasks_were_yielded_is_raised_not_retried() -> None:
    text = json.dumps({"tasks": TASKS})
    events = message_events(chunks(text[:text.index('{"id": "hero"')], 20), complete=False)

    def dies() -> Iterator[bytes]:
        yield sse(events)
        raise httpx2.RemoteProtocolError("peer closed connection without sending complete message body")

    server = ReplayServer(lambda _r: httpx2.Response(200, headers={"content-type": "text/event-stream"},
                                               content=dies()),
                    ok(message_events([PLAN_TEXT])))
    received: list[Any] = []
    with pytest.raises(ProviderError) as info:
        for item in make_provider(server).plan_stream("x", PlanContext(build_id="b1")):
            received.append(item)
    assert received == TASKS[:1]
    assert len(server.requests) == 1
    assert info.value.retryable is True
    assert not isinstance(info.value, ProviderTimeout)


def test_timeouts_are_retried_then_raise_provider_timeout() -> None:
    def times_out(request: httpx2.Request) -> httpx2.Response:
        raise httpx2.ReadTimeout("timed out", request=request)

    server = ReplayServer(times_out, times_out)
    with pytest.raises(ProviderTimeout):
        plan(make_provider(server, max_attempts=2))
    assert len(server.requests) == 2


def test_retry_after_beyond_the_deadline_is_not_waited_for() -> None:
    clock = FakeClock()
    server = ReplayServer(error(429, "rate_limit_error", "slow down", {"retry-after": "30"}))
    provider = make_provider(server, clock)
    with pytest.raises(ProviderError) as info:
        provider.transform(TransformKind.code_gen, {"prompt": "x"}, task_context(deadline_s=10))
    assert "429" in str(info.value) and info.value.retryable is True
    assert clock.sleeps == []
    assert len(server.requests) == 1


def test_authentication_error_is_not_retried() -> None:
    server = ReplayServer(error(401, "authentication_error", "invalid x-api-key"))
    with pytest.raises(ProviderError) as info:
        plan(make_provider(server))
    assert info.value.retryable is False
    assert "invalid x-api-key" in str(info.value)
    assert len(server.requests) == 1


def test_deadline_is_enforced_between_events() -> None:
    clock = FakeClock()

    def slow_body() -> Iterator[bytes]:
        for event in message_events(chunks(PLAN_TEXT, 30)):
            clock.now += 1.0  # each event arrives a second later
            yield sse([event])

    server = ReplayServer(lambda _r: httpx2.Response(200, headers={"content-type": "text/event-stream"},
                                               content=slow_body()))
    with pytest.raises(ProviderTimeout):
        make_provider(server, clock).transform(TransformKind.code_gen, {}, task_context(deadline_s=5))
    assert len(server.requests) == 1


# -- transforms --------------------------------------------------------------------------------


def test_code_gen_returns_the_parsed_files_and_drops_unsafe_paths() -> None:
    reply = ('<file path="src/Hero.tsx">\n'
             'export default function Hero() {\n  return <h1>Hi</h1>;\n}\n</file>\n'
             '<file path="../../etc/passwd">\nroot\n</file>\n')
    server = ReplayServer(ok(message_events(chunks(reply, 13), input_tokens=300, cache_read=0, output_tokens=60)))
    result = make_provider(server).transform(
        TransformKind.code_gen, {"prompt": "Write the hero", "targetPath": "src/Hero.tsx", "name": "Hero"},
        task_context(target_path="src/Hero.tsx", files={"src/App.tsx": "export {}\n"}))
    assert [(f.path, f.content) for f in result.files] == [
        ("src/Hero.tsx", "export default function Hero() {\n  return <h1>Hi</h1>;\n}\n")]
    assert result.usage.promptTokens == 300 and result.usage.completionTokens == 60
    assert result.usage.costUsd == pytest.approx((300 * 3 + 60 * 15) / 1e6)
    sent = server.body()
    assert sent["system"][0]["cache_control"] == {"type": "ephemeral"}
    assert "Write the hero" in sent["messages"][0]["content"]
    assert "src/App.tsx" in sent["messages"][0]["content"]


def test_a_reply_without_files_is_a_retryable_error() -> None:
    server = ReplayServer(ok(message_events(["Sure, I can help with that."])))
    with pytest.raises(ProviderError) as info:
        make_provider(server).transform(TransformKind.code_gen, {}, task_context())
    assert info.value.retryable is True


def test_heal_json_returns_the_text() -> None:
    healed = '{"id": "b", "type": "create_file", "name": "B"}'
    server = ReplayServer(ok(message_events(chunks(healed, 5))))
    result = make_provider(server).transform(
        TransformKind.heal_json, {"text": '{"id": "b", type: create_file', "error": "bad", "purpose": "task"},
        task_context(task_type="heal_json"))
    assert result.text == healed and result.files == []
    assert '{"id": "b", type: create_file' in server.body()["messages"][0]["content"]


def test_cancelled_call_stops_without_retrying() -> None:
    ctx = task_context()
    ctx.cancel.set()
    server = ReplayServer(ok(message_events(["<file path='a'>x</file>"])))
    with pytest.raises(ProviderError) as info:
        make_provider(server).transform(TransformKind.code_gen, {}, ctx)
    assert info.value.retryable is False
    assert server.requests == []


# -- a real HTTP server on 127.0.0.1 -------------------------------------------------------------


def test_end_to_end_against_a_local_http_server(httpserver: HTTPServer) -> None:
    httpserver.expect_request("/v1/messages", method="POST").respond_with_data(
        sse(message_events(chunks(PLAN_TEXT, 20))), content_type="text/event-stream")
    provider = AnthropicProvider("sk-ant-test", "claude-sonnet-4-5", base_url=httpserver.url_for("/"),
                                 retry=RetryPolicy(max_attempts=1))
    stream = provider.plan_stream("a landing page", PlanContext(build_id="b1"))
    assert list(stream) == TASKS
    assert stream.usage.completionTokens == 480
    request, _ = httpserver.log[0]
    assert request.headers["Authorization"] == "Bearer sk-ant-test"
    assert request.get_json()["system"][0]["cache_control"] == {"type": "ephemeral"}
