"""Claude on Amazon Bedrock: the anthropic SDK's Bedrock client (`anthropic.AnthropicBedrock`).

Same Messages API and the same streamed events as the Anthropic provider, so everything but the
client and the error shapes is inherited. What differs:
- Auth is SigV4 with the runtime's IAM credentials (the Lambda role); there is no API key to store.
- The model is a Bedrock model id or a cross-region inference profile id (`BEDROCK_MODEL_ID`); the
  region is the runtime's (`AWS_REGION`).
- The stream is AWS event-stream framing (`application/vnd.amazon.eventstream`), decoded by the
  SDK with botocore; a failure mid-stream arrives as an exception frame (`throttlingException`,
  `modelStreamErrorException`, ...), and an HTTP error carries `{"message": ...}` and the
  `x-amzn-ErrorType` header instead of Anthropic's error object.
"""

from __future__ import annotations

from typing import Any

from shared.providers.anthropic_provider import AnthropicProvider
from shared.providers.base import ProviderError
from shared.providers.retry import AttemptFailed, RetryPolicy
from shared.providers.vendor import DEFAULT_PLAN_DEADLINE_S

# Exception frames (and x-amzn-ErrorType values) worth another attempt, lower-cased.
_RETRYABLE_BEDROCK_ERRORS = frozenset(
    {
        "throttlingexception",
        "modelstreamerrorexception",
        "internalserverexception",
        "serviceunavailableexception",
        "modeltimeoutexception",
        "modelnotreadyexception",
    }
)


class BedrockProvider(AnthropicProvider):
    name = "bedrock"
    vendor = "Bedrock"
    retryable_stream_errors = _RETRYABLE_BEDROCK_ERRORS

    def __init__(
        self,
        model: str,
        *,
        region: str | None = None,
        base_url: str | None = None,
        http_client: Any = None,
        retry: RetryPolicy | None = None,
        plan_deadline_s: float = DEFAULT_PLAN_DEADLINE_S,
        idle_timeout_s: float = 60.0,
        connect_timeout_s: float = 10.0,
    ) -> None:
        """`region` defaults to AWS_REGION (set by Lambda); `base_url` to the regional
        bedrock-runtime endpoint (the SDK also honours ANTHROPIC_BEDROCK_BASE_URL)."""
        self._region = region
        super().__init__(
            "",
            model,
            base_url=base_url,
            http_client=http_client,
            retry=retry,
            plan_deadline_s=plan_deadline_s,
            idle_timeout_s=idle_timeout_s,
            connect_timeout_s=connect_timeout_s,
        )

    def _make_client(self, sdk: Any, api_key: str, kwargs: dict[str, Any]) -> Any:
        try:
            return sdk.AnthropicBedrock(aws_region=self._region, **kwargs)
        except ValueError as exc:  # no region anywhere: a configuration error, not a retry
            raise ProviderError(f"Bedrock client: {exc}", retryable=False) from exc

    def _error_details(self, exc: Any) -> tuple[str | None, str | None]:
        """Exception frames come as `{"type": "error", "error": {"type", "message"}}` (the SDK's
        translation); HTTP errors as `{"message"}` with the type in `x-amzn-ErrorType`."""
        error_type = getattr(exc, "type", None)
        detail = getattr(exc, "api_message", None)
        body = getattr(exc, "body", None)
        if isinstance(body, dict) and not detail:
            detail = body.get("message") or body.get("Message")
        response = getattr(exc, "response", None)
        if not error_type and response is not None:
            header = response.headers.get("x-amzn-errortype")
            if header:
                error_type = header.split(":", 1)[0]
        return (error_type.lower() if isinstance(error_type, str) else None), detail

    def _translate(self, exc: Exception) -> AttemptFailed:
        # The SDK signs each request with botocore; without credentials that raises before sending.
        if type(exc).__name__ in {"NoCredentialsError", "PartialCredentialsError"} or (
            isinstance(exc, RuntimeError) and "credentials" in str(exc).lower()
        ):
            return AttemptFailed(ProviderError(f"Bedrock: no AWS credentials ({exc})", retryable=False), retry=False)
        return super()._translate(exc)
