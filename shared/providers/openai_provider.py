"""The OpenAI-compatible provider: Chat Completions over plain httpx, streamed as SSE.

Why no SDK: the wire format is small and stable, httpx is already in the Lambda bundle, and "any
OpenAI-compatible server" (vLLM, Ollama, gateways) is better served by speaking the protocol than by
one vendor's client. Usage comes from the final chunk when the server honours
`stream_options.include_usage`; for servers that send none, tokens are estimated from the text sent
and received (the usage is marked `estimated`).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx

from shared.backoff import parse_retry_after
from shared.providers.base import ProviderError, ProviderTimeout
from shared.providers.retry import RETRYABLE_STATUS, AttemptFailed, RetryPolicy
from shared.providers.vendor import DEFAULT_PLAN_DEADLINE_S, Call, UsageCounter, VendorProvider

DEFAULT_MODEL = "gpt-4o-mini"
DEFAULT_BASE_URL = "https://api.openai.com/v1"


class OpenAICompatibleProvider(VendorProvider):
    name = "openai"

    def __init__(
        self,
        api_key: str,
        model: str = DEFAULT_MODEL,
        *,
        base_url: str = DEFAULT_BASE_URL,
        transport: httpx.BaseTransport | None = None,
        retry: RetryPolicy | None = None,
        plan_deadline_s: float = DEFAULT_PLAN_DEADLINE_S,
        idle_timeout_s: float = 60.0,
        connect_timeout_s: float = 10.0,
    ) -> None:
        """`transport` replaces the network (tests pass an httpx.MockTransport)."""
        super().__init__(retry=retry, plan_deadline_s=plan_deadline_s)
        self.model = model
        self._url = base_url.rstrip("/") + "/chat/completions"
        self._idle_timeout_s = idle_timeout_s
        self._connect_timeout_s = connect_timeout_s
        self._client = httpx.Client(
            transport=transport,
            headers={"Authorization": f"Bearer {api_key}", "Accept": "text/event-stream"},
        )

    def _texts(self, call: Call) -> Iterator[str]:
        clock = self.retry.clock
        remaining = max(0.01, call.deadline - clock())
        timeout = httpx.Timeout(min(remaining, self._idle_timeout_s),
                                connect=min(remaining, self._connect_timeout_s))
        body = {
            "model": self.model,
            "messages": [
                # Stable system prompt first: OpenAI caches long identical prefixes automatically.
                {"role": "system", "content": call.prompt.system},
                {"role": "user", "content": call.prompt.user},
            ],
            "max_tokens": call.prompt.max_tokens,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        try:
            with self._client.stream("POST", self._url, json=body, timeout=timeout) as response:
                if response.status_code >= 400:
                    response.read()
                    raise _status_failure(response)
                for data in _sse_data(response.iter_lines()):
                    call.check(clock())
                    if data == "[DONE]":
                        return
                    text = _chunk_text(data, call.counter)
                    if text:
                        yield text
        except AttemptFailed:
            raise
        except httpx.TimeoutException as exc:
            raise AttemptFailed(ProviderTimeout(f"the OpenAI-compatible server timed out: {exc}"),
                                retry=True) from exc
        except httpx.TransportError as exc:
            raise AttemptFailed(ProviderError(f"could not reach the OpenAI-compatible server: {exc}"),
                                retry=True) from exc


def _sse_data(lines: Iterator[str]) -> Iterator[str]:
    """The `data` payload of each server-sent event (multi-line data joined; comments skipped)."""
    data: list[str] = []
    for line in lines:
        if not line:
            if data:
                yield "\n".join(data)
                data = []
            continue
        if line.startswith(":"):
            continue
        field, _, value = line.partition(":")
        if field == "data":
            data.append(value[1:] if value.startswith(" ") else value)
    if data:  # a final event without its blank line (a cut-off stream)
        yield "\n".join(data)


def _chunk_text(data: str, counter: UsageCounter) -> str:
    """Text of one chat.completion.chunk; records usage when the chunk carries it."""
    try:
        chunk = json.loads(data)
    except ValueError:
        raise AttemptFailed(ProviderError(f"unreadable stream chunk: {data[:200]!r}"), retry=True) from None
    if not isinstance(chunk, dict):
        return ""
    if chunk.get("error"):
        error = chunk["error"]
        message = error.get("message", error) if isinstance(error, dict) else error
        raise AttemptFailed(ProviderError(f"the server reported an error mid-stream: {message}"), retry=True)
    if isinstance(chunk.get("model"), str) and chunk["model"]:
        counter.model = chunk["model"]
    usage = chunk.get("usage")
    if isinstance(usage, dict):
        prompt = int(usage.get("prompt_tokens") or 0)
        details = usage.get("prompt_tokens_details") or {}
        cached = int(details.get("cached_tokens") or 0) if isinstance(details, dict) else 0
        counter.set_attempt(input=max(0, prompt - cached), output=int(usage.get("completion_tokens") or 0),
                            cache_read=cached, cache_write=0, final=True)
    parts: list[str] = []
    for choice in chunk.get("choices") or []:
        delta = choice.get("delta") if isinstance(choice, dict) else None
        if isinstance(delta, dict) and isinstance(delta.get("content"), str) and choice.get("index", 0) == 0:
            parts.append(delta["content"])
    return "".join(parts)


def _status_failure(response: httpx.Response) -> AttemptFailed:
    status = response.status_code
    detail: Any = response.text[:500]
    try:
        error = response.json().get("error")
        if isinstance(error, dict):
            detail = error.get("message") or error.get("type") or detail
    except (ValueError, AttributeError):
        pass
    retryable = status in RETRYABLE_STATUS or status >= 500
    error_ = ProviderError(f"the OpenAI-compatible server returned {status}: {detail}", retryable=retryable)
    return AttemptFailed(error_, retry=retryable,
                         retry_after=parse_retry_after(response.headers) if retryable else None)
