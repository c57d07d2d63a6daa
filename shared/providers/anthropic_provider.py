"""The Anthropic provider: the official SDK, streaming Messages API, prompt caching on the system
prompt.

Why the SDK is imported inside the constructor: it (and httpx2) costs noticeable Lambda cold-start
time, and only functions configured for this vendor should pay it. The SDK's own retries are off
(`max_retries=0`); `VendorProvider` retries with a backoff bounded by the call's deadline.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from shared.backoff import parse_retry_after
from shared.providers.base import ProviderError, ProviderTimeout
from shared.providers.retry import RETRYABLE_STATUS, AttemptFailed, RetryPolicy
from shared.providers.vendor import DEFAULT_PLAN_DEADLINE_S, Call, UsageCounter, VendorProvider

DEFAULT_MODEL = "claude-sonnet-4-5"
# Error types Anthropic sends inside an SSE `error` event (HTTP status already 200) worth retrying.
_RETRYABLE_STREAM_ERRORS = frozenset({"overloaded_error", "rate_limit_error", "api_error", "timeout_error"})


class AnthropicProvider(VendorProvider):
    name = "anthropic"
    vendor = "Anthropic"  # in error messages
    retryable_stream_errors: frozenset[str] = _RETRYABLE_STREAM_ERRORS

    def __init__(
        self,
        api_key: str,
        model: str = DEFAULT_MODEL,
        *,
        base_url: str | None = None,
        http_client: Any = None,
        retry: RetryPolicy | None = None,
        plan_deadline_s: float = DEFAULT_PLAN_DEADLINE_S,
        idle_timeout_s: float = 60.0,
        connect_timeout_s: float = 10.0,
    ) -> None:
        """`http_client` is an `httpx2.Client` (tests pass one with a MockTransport); `base_url`
        overrides the SDK's default (which itself honours ANTHROPIC_BASE_URL)."""
        import anthropic  # lazy: see the module docstring
        import httpx2

        super().__init__(retry=retry, plan_deadline_s=plan_deadline_s)
        self.model = model
        # Typed as Any: the SDK is imported lazily, and events are read by their `type` field.
        self._sdk: Any = anthropic
        self._httpx: Any = httpx2
        self._idle_timeout_s = idle_timeout_s
        self._connect_timeout_s = connect_timeout_s
        kwargs: dict[str, Any] = {"max_retries": 0}
        if base_url:
            kwargs["base_url"] = base_url
        if http_client is not None:
            kwargs["http_client"] = http_client
        self._client: Any = self._make_client(anthropic, api_key, kwargs)

    def _make_client(self, sdk: Any, api_key: str, kwargs: dict[str, Any]) -> Any:
        """The SDK client (the Bedrock provider builds the SDK's Bedrock client instead)."""
        return sdk.Anthropic(api_key=api_key, **kwargs)

    def _texts(self, call: Call) -> Iterator[str]:
        clock = self.retry.clock
        remaining = max(0.01, call.deadline - clock())
        # The read timeout bounds each wait for the next event (Anthropic pings while it thinks), the
        # deadline check between events bounds the whole call.
        timeout = self._httpx.Timeout(min(remaining, self._idle_timeout_s),
                                      connect=min(remaining, self._connect_timeout_s))
        try:
            stream = self._client.messages.create(
                model=self.model,
                max_tokens=call.prompt.max_tokens,
                # The stable part of the prompt, cached: later calls read it at a tenth of the price.
                system=[{"type": "text", "text": call.prompt.system, "cache_control": {"type": "ephemeral"}}],
                messages=[{"role": "user", "content": call.prompt.user}],
                stream=True,
                timeout=timeout,
            )
        except Exception as exc:  # translated below; anything unexpected propagates
            raise self._translate(exc) from exc
        counter = call.counter
        with stream:
            try:
                for event in stream:
                    call.check(clock())
                    kind = getattr(event, "type", None)
                    if kind == "content_block_delta":
                        delta = event.delta
                        if getattr(delta, "type", None) == "text_delta" and delta.text:
                            yield delta.text
                    elif kind == "message_start":
                        message = event.message
                        counter.model = getattr(message, "model", None) or counter.model
                        _add_usage(counter, message.usage)
                    elif kind == "message_delta":
                        _add_usage(counter, event.usage, final=True)
            except AttemptFailed:
                raise
            except Exception as exc:
                raise self._translate(exc) from exc

    def _translate(self, exc: Exception) -> AttemptFailed:
        """Vendor error → AttemptFailed (retry within the call?) carrying the ProviderError to raise."""
        sdk, httpx2 = self._sdk, self._httpx
        if isinstance(exc, AttemptFailed):
            return exc
        if isinstance(exc, sdk.APITimeoutError | httpx2.TimeoutException):
            return AttemptFailed(ProviderTimeout(f"{self.vendor} timed out: {exc}"), retry=True)
        if isinstance(exc, sdk.APIStatusError):
            status = exc.status_code
            error_type, detail = self._error_details(exc)
            message = f"{self.vendor} returned {status}" + (f" {error_type}" if error_type else "")
            if detail:
                message += f": {detail}"
            retryable = (status in RETRYABLE_STATUS or status >= 500
                         or error_type in self.retryable_stream_errors)
            headers = exc.response.headers if exc.response is not None else None
            return AttemptFailed(ProviderError(message, retryable=retryable), retry=retryable,
                                 retry_after=parse_retry_after(headers) if retryable else None)
        if isinstance(exc, sdk.APIConnectionError | httpx2.TransportError):
            return AttemptFailed(ProviderError(f"could not reach {self.vendor}: {exc}"), retry=True)
        if isinstance(exc, sdk.AnthropicError):
            error = ProviderError(f"{self.vendor} client error: {exc}", retryable=False)
            return AttemptFailed(error, retry=False)
        raise exc

    def _error_details(self, exc: Any) -> tuple[str | None, str | None]:
        """(error type, human-readable detail) of an APIStatusError, from Anthropic's error body."""
        return getattr(exc, "type", None), getattr(exc, "api_message", None)


def _add_usage(counter: UsageCounter, usage: Any, *, final: bool = False) -> None:
    """message_start carries the input and cache counts; message_delta the cumulative output count
    (and, in newer API versions, cumulative input/cache counts too, which then replace the start's)."""
    if usage is None:
        return
    counter.set_attempt(
        input=getattr(usage, "input_tokens", None),
        output=getattr(usage, "output_tokens", None),
        cache_read=getattr(usage, "cache_read_input_tokens", None),
        cache_write=getattr(usage, "cache_creation_input_tokens", None),
        final=final,
    )
