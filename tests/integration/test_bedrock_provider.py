"""BedrockProvider against Bedrock's real wire format, offline.

A local HTTP server plays bedrock-runtime: `POST /model/{modelId}/invoke-with-response-stream`
answered with `application/vnd.amazon.eventstream` frames (prelude, CRCs, `:event-type chunk`
headers, payload `{"bytes": base64(<Messages event JSON>)}`), exception frames for mid-stream
failures, and AWS JSON error bodies with `x-amzn-ErrorType`. The real SDK (`AnthropicBedrock`,
botocore's SigV4 signer and event-stream decoder) talks to it; nothing in the SDK is patched.
"""

from __future__ import annotations

import base64
import binascii
import json
import struct
from collections.abc import Iterator
from typing import Any

import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from shared.providers.base import PlanContext, ProviderError, TransformKind
from shared.providers.bedrock_provider import BedrockProvider
from shared.providers.factory import get_provider, reset_providers
from shared.providers.retry import RetryPolicy
from shared.settings import Settings
from tests.helpers import FakeClock, chunks, task_context
from tests.integration.test_anthropic_provider import PLAN_TEXT, TASKS, message_events

MODEL = "us.anthropic.claude-sonnet-4-5-20250929-v1:0"
STREAM_PATH = f"/model/{MODEL}/invoke-with-response-stream"
EVENTSTREAM = "application/vnd.amazon.eventstream"


# -- AWS event-stream encoding (the decoder under test is botocore's) --------------------------


def _header(name: str, value: str) -> bytes:
    raw_name, raw_value = name.encode(), value.encode()
    return struct.pack("!B", len(raw_name)) + raw_name + struct.pack("!BH", 7, len(raw_value)) + raw_value


def frame(headers: dict[str, str], payload: bytes) -> bytes:
    """One event-stream message: total length, headers length, prelude CRC, headers, payload, CRC."""
    head = b"".join(_header(k, v) for k, v in headers.items())
    total = 12 + len(head) + len(payload) + 4
    prelude = struct.pack("!II", total, len(head))
    prelude += struct.pack("!I", binascii.crc32(prelude) & 0xFFFFFFFF)
    message = prelude + head + payload
    return message + struct.pack("!I", binascii.crc32(message) & 0xFFFFFFFF)


def chunk_frame(event: dict[str, Any]) -> bytes:
    payload = json.dumps({"bytes": base64.b64encode(json.dumps(event).encode()).decode()}).encode()
    return frame({":event-type": "chunk", ":content-type": "application/json", ":message-type": "event"}, payload)


def exception_frame(kind: str, message: str) -> bytes:
    payload = json.dumps({"message": message}).encode()
    return frame({":exception-type": kind, ":content-type": "application/json", ":message-type": "exception"}, payload)


def bedrock_events(deltas: list[str], **kw: Any) -> list[dict[str, Any]]:
    """Bedrock relays the Messages stream events; `message_start` names the model without a prefix."""
    events = message_events(deltas, **kw)
    events[0]["message"]["model"] = "claude-sonnet-4-5-20250929"
    return [e for e in events if e["type"] != "ping"]


def stream_body(frames: list[bytes], split: int | None = None) -> Iterator[bytes]:
    raw = b"".join(frames)
    step = split or len(raw)
    for i in range(0, len(raw), step):
        yield raw[i : i + step]


def aws_error(status: int, error_type: str, message: str) -> Response:
    return Response(
        json.dumps({"message": message}),
        status=status,
        headers={"x-amzn-ErrorType": f"{error_type}:http://internal.amazon.com/coral/com.amazon.bedrock/"},
        content_type="application/json",
    )


# -- fixtures ----------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _aws_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "session-token")
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.delenv("AWS_BEARER_TOKEN_BEDROCK", raising=False)
    monkeypatch.delenv("ANTHROPIC_BEDROCK_BASE_URL", raising=False)


def make_provider(httpserver: HTTPServer, clock: FakeClock | None = None, **retry: Any) -> BedrockProvider:
    clock = clock or FakeClock()
    policy = RetryPolicy(sleep=clock.sleep, clock=clock.clock, jitter=False, base_s=0.5, **retry)
    return BedrockProvider(MODEL, base_url=httpserver.url_for("/"), retry=policy)


def serve_stream(httpserver: HTTPServer, frames: list[bytes], split: int | None = None) -> None:
    def handler(_request: Request) -> Response:
        return Response(stream_body(frames, split), status=200, content_type=EVENTSTREAM)

    httpserver.expect_ordered_request(STREAM_PATH, method="POST").respond_with_handler(handler)


# -- tests -------------------------------------------------------------------------------------


def test_plan_streams_over_bedrock_event_stream_signed_with_sigv4(httpserver: HTTPServer) -> None:
    serve_stream(httpserver, [chunk_frame(e) for e in bedrock_events(chunks(PLAN_TEXT, 16))], split=7)
    stream = make_provider(httpserver).plan_stream("a landing page", PlanContext(build_id="b1"))

    assert list(stream) == TASKS  # frames split every 7 bytes: across preludes, headers and CRCs
    assert stream.attempts == 1
    assert stream.usage.promptTokens == 1200 + 2048 and stream.usage.completionTokens == 480
    assert stream.usage.costUsd == pytest.approx((1200 * 3 + 2048 * 0.3 + 480 * 15) / 1e6)

    request, _ = httpserver.log[0]
    body = request.get_json()
    assert body["anthropic_version"]  # Bedrock takes the API version in the body, not a header
    assert "model" not in body and "stream" not in body  # both live in the path on Bedrock
    assert body["system"][0]["cache_control"] == {"type": "ephemeral"}
    assert "a landing page" in body["messages"][0]["content"]
    auth = request.headers["Authorization"]
    assert auth.startswith("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/")
    assert "/us-east-1/bedrock/aws4_request" in auth
    assert request.headers["X-Amz-Security-Token"] == "session-token"
    assert "x-api-key" not in request.headers


def test_throttling_exception_frame_before_any_text_is_retried(httpserver: HTTPServer) -> None:
    first = bedrock_events([], complete=False)[:1]
    serve_stream(httpserver, [chunk_frame(first[0]), exception_frame("throttlingException", "Too many tokens")])
    serve_stream(httpserver, [chunk_frame(e) for e in bedrock_events([PLAN_TEXT])])
    clock = FakeClock()
    stream = make_provider(httpserver, clock).plan_stream("x", PlanContext(build_id="b1"))
    assert list(stream) == TASKS
    assert stream.attempts == 2
    assert clock.sleeps == [0.5]


def test_http_throttling_is_retried_and_access_denied_is_not(httpserver: HTTPServer) -> None:
    httpserver.expect_ordered_request(STREAM_PATH, method="POST").respond_with_response(
        aws_error(429, "ThrottlingException", "Too many requests, please wait before trying again.")
    )
    httpserver.expect_ordered_request(STREAM_PATH, method="POST").respond_with_response(
        aws_error(
            403,
            "AccessDeniedException",
            "User is not authorized to perform: bedrock:InvokeModelWithResponseStream",
        )
    )
    with pytest.raises(ProviderError) as info:
        make_provider(httpserver).transform(TransformKind.code_gen, {}, task_context())
    assert info.value.retryable is False
    assert "403" in str(info.value) and "accessdeniedexception" in str(info.value)
    assert "bedrock:InvokeModelWithResponseStream" in str(info.value)
    assert len(httpserver.log) == 2


def test_code_gen_over_bedrock_returns_files(httpserver: HTTPServer) -> None:
    reply = '<file path="src/Hero.tsx">\nexport default function Hero() {}\n</file>\n'
    serve_stream(
        httpserver,
        [chunk_frame(e) for e in bedrock_events(chunks(reply, 9), input_tokens=300, cache_read=0, output_tokens=60)],
    )
    result = make_provider(httpserver).transform(TransformKind.code_gen, {"prompt": "hero"}, task_context())
    assert [(f.path, f.content) for f in result.files] == [("src/Hero.tsx", "export default function Hero() {}\n")]
    assert result.usage.costUsd == pytest.approx((300 * 3 + 60 * 15) / 1e6)


def test_factory_builds_bedrock_without_any_key(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("ANTHROPIC_API_KEY", "PROVIDER_SECRET_ARN"):
        monkeypatch.delenv(name, raising=False)
    reset_providers()
    provider = get_provider(Settings(AI_PROVIDER="bedrock", BEDROCK_MODEL_ID=MODEL))
    assert isinstance(provider, BedrockProvider)
    assert provider.identity() == f"bedrock:{MODEL}"
    reset_providers()
