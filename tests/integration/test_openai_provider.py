"""OpenAICompatibleProvider against the Chat Completions streaming wire format, offline.

httpx.MockTransport replays genuine `chat.completion.chunk` SSE streams (role chunk, content deltas,
finish chunk, the include_usage chunk with empty choices, `data: [DONE]`) and error bodies; one test
talks to a real HTTP server on 127.0.0.1 through OPENAI_BASE_URL.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from pytest_httpserver import HTTPServer

from shared.providers.base import (
    MalformedTask,
    PlanContext,
    ProviderError,
    ProviderTimeout,
    TransformKind,
)
from shared.providers.openai_provider import OpenAICompatibleProvider
from shared.providers.retry import RetryPolicy
from tests.helpers import FakeClock, ReplayServer, chunks, task_context

MODEL_ID = "gpt-4o-mini-2024-07-18"
TASKS = [
    {"id": "setup", "type": "setup_config", "name": "Configure {vite} \"app\"", "priority": 0,
     "input": {"targetPath": "package.json", "dependencies": []}},
    {"id": "hero", "type": "create_component", "name": "Hero \u00e9 \U0001f680",
     "input": {"prompt": "braces } ] and \\ backslashes", "targetPath": "src/Hero.tsx",
               "dependencies": ["setup"]}},
    {"id": "page", "type": "create_file", "name": "Page",
     "input": {"targetPath": "src/App.tsx", "dependencies": ["hero"]}},
]
PLAN_JSON = json.dumps({"tasks": TASKS})


# -- the wire format ---------------------------------------------------------------------------


def chunk(delta: dict[str, Any] | None, *, finish: str | None = None, usage: dict[str, Any] | None = None,
          with_usage_field: bool = True) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": "chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG", "object": "chat.completion.chunk",
        "created": 1741570283, "model": MODEL_ID, "system_fingerprint": "fp_06737a9306",
        "choices": [] if delta is None else [
            {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
    }
    if with_usage_field:
        body["usage"] = usage
    return body


def completion_stream(deltas: list[str], *, prompt_tokens: int = 900, completion_tokens: int = 350,
                      cached: int = 0, send_usage: bool = True, done: bool = True) -> bytes:
    chunks = [chunk({"role": "assistant", "content": "", "refusal": None}, with_usage_field=send_usage)]
    chunks += [chunk({"content": d}, with_usage_field=send_usage) for d in deltas]
    if done:
        chunks.append(chunk({}, finish="stop", with_usage_field=send_usage))
        if send_usage:
            chunks.append(chunk(None, usage={
                "prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
                "prompt_tokens_details": {"cached_tokens": cached, "audio_tokens": 0},
                "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
                                              "accepted_prediction_tokens": 0,
                                              "rejected_prediction_tokens": 0}}))
    text = "".join(f"data: {json.dumps(c)}\n\n" for c in chunks)
    if done:
        text += "data: [DONE]\n\n"
    return text.encode()


def ok(body: bytes | Iterator[bytes]) -> httpx.Response:
    return httpx.Response(200, headers={"content-type": "text/event-stream; charset=utf-8"}, content=body)


def error(status: int, message: str, code: str, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.Response(status, headers=headers or {}, json={
        "error": {"message": message, "type": "requests", "param": None, "code": code}})


def make_provider(server: ReplayServer, clock: FakeClock | None = None, *, model: str = "gpt-4o-mini",
                  **retry: Any) -> OpenAICompatibleProvider:
    clock = clock or FakeClock()
    policy = RetryPolicy(sleep=clock.sleep, clock=clock.clock, jitter=False, base_s=0.25, **retry)
    return OpenAICompatibleProvider("sk-test", model, base_url="https://llm.example/v1/",
                                    transport=httpx.MockTransport(server), retry=policy)


def plan(provider: OpenAICompatibleProvider) -> tuple[list[Any], Any]:
    stream = provider.plan_stream("a landing page", PlanContext(build_id="b1"))
    return list(stream), stream


# -- plan streaming ----------------------------------------------------------------------------


def test_plan_streams_tasks_with_usage_and_cost() -> None:
    server = ReplayServer(ok(completion_stream(chunks(PLAN_JSON, 12), prompt_tokens=2000, cached=1024)))
    items, stream = plan(make_provider(server))

    assert items == TASKS
    assert stream.attempts == 1
    assert stream.usage.promptTokens == 2000  # prompt_tokens already includes the cached ones
    assert stream.usage.cacheReadTokens == 1024
    assert stream.usage.completionTokens == 350
    # gpt-4o-mini: $0.15 input, $0.075 cached input, $0.60 output per million.
    assert stream.usage.costUsd == pytest.approx((976 * 0.15 + 1024 * 0.075 + 350 * 0.60) / 1e6)

    request = server.requests[0]
    assert str(request.url) == "https://llm.example/v1/chat/completions"
    assert request.headers["authorization"] == "Bearer sk-test"
    sent = server.body()
    assert sent["stream"] is True and sent["stream_options"] == {"include_usage": True}
    assert sent["model"] == "gpt-4o-mini"
    assert [m["role"] for m in sent["messages"]] == ["system", "user"]
    assert "a landing page" in sent["messages"][1]["content"]


def test_tasks_are_yielded_as_they_close() -> None:
    received: list[Any] = []
    seen_at_done: list[int] = []

    def body() -> Iterator[bytes]:
        raw = completion_stream(chunks(PLAN_JSON, 10)).decode()
        for event in raw.split("\n\n"):
            if event.startswith("data: [DONE]"):
                seen_at_done.append(len(received))
            yield (event + "\n\n").encode()

    for item in make_provider(ReplayServer(ok(body()))).plan_stream("x", PlanContext(build_id="b1")):
        received.append(item)
    assert seen_at_done == [len(TASKS)]


def test_byte_chunks_split_mid_line_and_mid_utf8() -> None:
    raw = completion_stream(chunks(json.dumps({"tasks": TASKS}, ensure_ascii=False), 5))

    def odd() -> Iterator[bytes]:
        for i in range(0, len(raw), 11):
            yield raw[i:i + 11]

    items, _ = plan(make_provider(ReplayServer(ok(odd()))))
    assert items == TASKS


def test_malformed_task_is_reported_and_the_others_survive() -> None:
    text = ('[{"id": "a", "type": "create_file", "name": "A"}, {"id": "b", "name": "B" "type": "x"},'
            ' {"id": "c", "type": "create_file", "name": "C"}]')
    items, _ = plan(make_provider(ReplayServer(ok(completion_stream(chunks(text, 7))))))
    assert items[0]["id"] == "a" and items[2]["id"] == "c"
    assert isinstance(items[1], MalformedTask)
    assert items[1].raw == '{"id": "b", "name": "B" "type": "x"}'


def test_truncated_stream_without_done_gives_the_tasks_so_far_and_the_fragment() -> None:
    cut = PLAN_JSON.index('{"id": "page"') + 15
    items, stream = plan(make_provider(ReplayServer(ok(completion_stream(chunks(PLAN_JSON[:cut], 9), done=False)))))
    assert items[:2] == TASKS[:2]
    assert isinstance(items[2], MalformedTask) and items[2].raw == PLAN_JSON[cut - 15:cut]
    # No usage chunk arrived: the call is billed all the same, estimated from what was sent and received.
    assert stream.usage.estimated
    assert stream.usage.completionTokens == -(-cut // 4)
    assert stream.usage.promptTokens > 0 and stream.usage.costUsd is not None and stream.usage.costUsd > 0


def test_server_without_usage_is_billed_as_an_estimate_marked_as_such() -> None:
    items, stream = plan(make_provider(ReplayServer(ok(completion_stream([PLAN_JSON], send_usage=False)))))
    assert items == TASKS
    assert stream.usage.estimated
    assert stream.usage.completionTokens == -(-len(PLAN_JSON) // 4)
    assert stream.usage.promptTokens > 0 and stream.usage.costUsd is not None and stream.usage.costUsd > 0


def test_unknown_model_is_not_priced() -> None:
    server = ReplayServer(ok(completion_stream([PLAN_JSON]).replace(MODEL_ID.encode(), b"llama-3.1-70b")))
    _, stream = plan(make_provider(server, model="llama-3.1-70b"))
    assert stream.usage.promptTokens == 900
    assert stream.usage.costUsd is None


def test_429_with_retry_after_then_success() -> None:
    clock = FakeClock()
    limited = error(429, "Rate limit reached for gpt-4o-mini", "rate_limit_exceeded", {"Retry-After": "3"})
    server = ReplayServer(limited, ok(completion_stream([PLAN_JSON])))
    items, stream = plan(make_provider(server, clock))
    assert items == TASKS
    assert stream.attempts == 2 and len(server.requests) == 2
    assert clock.sleeps == [3.0]


def test_5xx_is_retried_with_exponential_backoff() -> None:
    clock = FakeClock()
    server = ReplayServer(error(500, "The server had an error", "server_error"),
                    error(503, "The engine is currently overloaded", "overloaded"),
                    ok(completion_stream([PLAN_JSON])))
    items, stream = plan(make_provider(server, clock))
    assert items == TASKS
    assert stream.attempts == 3
    assert clock.sleeps == [0.25, 0.5]


def test_retries_are_bounded_by_max_attempts() -> None:
    server = ReplayServer(*[error(503, "overloaded", "overloaded") for _ in range(3)])
    with pytest.raises(ProviderError) as info:
        plan(make_provider(server, max_attempts=3))
    assert len(server.requests) == 3
    assert info.value.retryable is True and "503" in str(info.value)


def test_bad_request_is_not_retried() -> None:
    server = ReplayServer(error(400, "Invalid 'max_tokens'", "invalid_value"))
    with pytest.raises(ProviderError) as info:
        plan(make_provider(server))
    assert info.value.retryable is False and "Invalid 'max_tokens'" in str(info.value)
    assert len(server.requests) == 1


def test_timeout_raises_provider_timeout_after_retrying() -> None:
    def times_out(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out", request=request)

    server = ReplayServer(times_out, times_out)
    with pytest.raises(ProviderTimeout):
        plan(make_provider(server, max_attempts=2))
    assert len(server.requests) == 2


def test_error_chunk_mid_stream_before_text_is_retried() -> None:
    first = b'data: {"error": {"message": "upstream overloaded", "type": "server_error"}}\n\n'
    server = ReplayServer(ok(first), ok(completion_stream([PLAN_JSON])))
    items, stream = plan(make_provider(server))
    assert items == TASKS and stream.attempts == 2


def test_cancellation_mid_stream_stops_the_call() -> None:
    ctx = task_context()

    def body() -> Iterator[bytes]:
        raw = completion_stream(chunks('<file path="a.ts">\nx\n</file>\n', 4)).decode()
        for n, event in enumerate(raw.split("\n\n")):
            if n == 3:
                ctx.cancel.set()
            yield (event + "\n\n").encode()

    server = ReplayServer(ok(body()))
    with pytest.raises(ProviderError) as info:
        make_provider(server).transform(TransformKind.code_gen, {}, ctx)
    assert info.value.retryable is False and "cancelled" in str(info.value)
    assert len(server.requests) == 1


# -- transforms --------------------------------------------------------------------------------


def test_refactor_returns_files_and_sends_the_existing_file() -> None:
    reply = '<file path="src/App.tsx">\nexport const App = () => null;\n</file>'
    server = ReplayServer(ok(completion_stream(chunks(reply, 6), prompt_tokens=400, completion_tokens=30)))
    result = make_provider(server).transform(
        TransformKind.refactor, {"prompt": "simplify", "targetPath": "src/App.tsx"},
        task_context(task_type="modify_file", target_path="src/App.tsx",
                     files={"src/App.tsx": "export function App() { return null }\n"}))
    assert [(f.path, f.content) for f in result.files] == [
        ("src/App.tsx", "export const App = () => null;\n")]
    assert result.usage.costUsd == pytest.approx((400 * 0.15 + 30 * 0.60) / 1e6)
    assert "export function App()" in server.body()["messages"][1]["content"]


def test_heal_dependencies_returns_the_text() -> None:
    reply = '{"tasks": [{"id": "a", "dependencies": []}, {"id": "b", "dependencies": ["a"]}]}'
    server = ReplayServer(ok(completion_stream(chunks(reply, 8))))
    result = make_provider(server).transform(
        TransformKind.heal_json,
        {"text": "{}", "error": "cycle", "purpose": "dependencies", "cycles": ["a -> b -> a"]},
        task_context(task_type="heal_json"))
    assert result.text == reply
    assert "a -> b -> a" in server.body()["messages"][1]["content"]


# -- a real HTTP server on 127.0.0.1 -------------------------------------------------------------


def test_end_to_end_against_a_local_http_server(httpserver: HTTPServer) -> None:
    httpserver.expect_request("/v1/chat/completions", method="POST").respond_with_data(
        completion_stream(chunks(PLAN_JSON, 25)), content_type="text/event-stream")
    provider = OpenAICompatibleProvider("sk-local", "gpt-4o-mini", base_url=httpserver.url_for("/v1"),
                                        retry=RetryPolicy(max_attempts=1))
    stream = provider.plan_stream("a landing page", PlanContext(build_id="b1"))
    assert list(stream) == TASKS
    assert stream.usage.completionTokens == 350
    request, _ = httpserver.log[0]
    assert request.headers["Authorization"] == "Bearer sk-local"
    assert request.get_json()["stream_options"] == {"include_usage": True}
