"""Choose the AI provider from settings (AI_PROVIDER) and give it its key.

Claude on Amazon Bedrock needs no key (the runtime's IAM role signs the requests). Other keys come
from the environment locally and, on AWS, from the Secrets Manager secret named by
PROVIDER_SECRET_ARN (JSON such as {"ANTHROPIC_API_KEY": "...", "OPENAI_API_KEY": "..."}), read
through Powertools parameters so warm Lambdas reuse it for five minutes.

Why providers are cached (per Settings object): each holds an HTTP client with a connection pool;
building one per call would redo TLS handshakes. The cache key includes a hash of the API key, so a
rotated secret gives a new provider once the Powertools cache expires. Vendor modules are imported
only when chosen.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from shared import constants as c
from shared.providers.base import AIProvider, ProviderError
from shared.settings import Settings

SECRET_MAX_AGE_S = 300
_CACHE_SIZE = 8
# (id(settings), key digest) -> (settings, provider). Holding the settings object pins its id, so a
# new Settings (tests, reset_settings) gets a fresh provider and an id is never reused while cached.
_cache: OrderedDict[tuple[int, str], tuple[Settings, AIProvider]] = OrderedDict()
_lock = threading.Lock()


def get_provider(settings: Settings) -> AIProvider:
    """The provider for this Settings object (cached). Raises ProviderError naming a missing key."""
    name = settings.ai_provider
    if name == "mock":
        return _cached(settings, "", lambda: _mock(settings))
    if name == "anthropic":
        api_key = _api_key(settings, c.ANTHROPIC_API_KEY, settings.anthropic_api_key)
        return _cached(settings, _digest(api_key), lambda: _anthropic(settings, api_key))
    if name == "openai":
        api_key = _api_key(settings, c.OPENAI_API_KEY, settings.openai_api_key)
        return _cached(settings, _digest(api_key), lambda: _openai(settings, api_key))
    if name == "bedrock":  # IAM credentials of the runtime: no key to read
        return _cached(settings, "", lambda: _bedrock(settings))
    raise ProviderError(f"{c.AI_PROVIDER}={name!r} is not a known provider", retryable=False)


def reset_providers() -> None:
    """Forget cached providers (tests, and the local runtime when settings change)."""
    with _lock:
        _cache.clear()


def _cached(settings: Settings, key_digest: str, build: Callable[[], AIProvider]) -> AIProvider:
    key = (id(settings), key_digest)
    with _lock:
        entry = _cache.get(key)
        if entry is not None and entry[0] is settings:
            _cache.move_to_end(key)
            return entry[1]
        provider = build()
        _cache[key] = (settings, provider)
        while len(_cache) > _CACHE_SIZE:
            _cache.popitem(last=False)
        return provider


def _mock(settings: Settings) -> AIProvider:
    from shared.providers.mock import MockProvider  # written alongside; imported only when chosen

    provider: AIProvider = MockProvider(script_path=settings.mock_script)
    return provider


def _anthropic(settings: Settings, api_key: str) -> AIProvider:
    from shared.providers.anthropic_provider import AnthropicProvider

    return AnthropicProvider(api_key, settings.anthropic_model, base_url=settings.anthropic_base_url)


def _openai(settings: Settings, api_key: str) -> AIProvider:
    from shared.providers.openai_provider import OpenAICompatibleProvider

    return OpenAICompatibleProvider(api_key, settings.openai_model, base_url=settings.openai_base_url)


def _bedrock(settings: Settings) -> AIProvider:
    from shared.providers.bedrock_provider import BedrockProvider

    return BedrockProvider(settings.bedrock_model_id)


def _api_key(settings: Settings, variable: str, from_env: str | None) -> str:
    if settings.provider_secret_arn:
        secret = _read_secret(settings.provider_secret_arn)
        value = secret.get(variable)
        if not isinstance(value, str) or not value.strip():
            raise ProviderError(
                f"{variable} is missing from the provider secret ({c.PROVIDER_SECRET_ARN}); "
                f"it is required when {c.AI_PROVIDER}={settings.ai_provider}", retryable=False)
        return value.strip()
    if not from_env or not from_env.strip():
        raise ProviderError(
            f"{variable} is not set; it is required when {c.AI_PROVIDER}={settings.ai_provider}",
            retryable=False)
    return from_env.strip()


def _read_secret(arn: str) -> dict[str, Any]:
    from aws_lambda_powertools.utilities import parameters

    try:
        value = parameters.get_secret(arn, transform="json", max_age=SECRET_MAX_AGE_S)
    except Exception as exc:  # GetParameterError, TransformParameterError, botocore errors
        raise ProviderError(f"could not read the provider secret ({c.PROVIDER_SECRET_ARN}): "
                            f"{type(exc).__name__}", retryable=True) from exc
    if not isinstance(value, dict):
        raise ProviderError(f"the provider secret ({c.PROVIDER_SECRET_ARN}) is not a JSON object",
                            retryable=False)
    return value


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()[:16]
