"""get_provider: the vendor from AI_PROVIDER, keys from the environment or Secrets Manager."""

from __future__ import annotations

import json
from collections.abc import Iterator

import boto3
import pytest
from aws_lambda_powertools.utilities import parameters
from moto import mock_aws

from shared.providers.anthropic_provider import AnthropicProvider
from shared.providers.base import ProviderError
from shared.providers.factory import get_provider, reset_providers
from shared.providers.openai_provider import OpenAICompatibleProvider
from shared.settings import Settings


@pytest.fixture(autouse=True)
def _fresh(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in ("ANTHROPIC_API_KEY", "OPENAI_API_KEY", "PROVIDER_SECRET_ARN", "STEPWISE_MOCK_SCRIPT"):
        monkeypatch.delenv(name, raising=False)
    reset_providers()
    parameters.clear_caches()
    yield
    reset_providers()
    parameters.clear_caches()


def test_mock_is_the_default_and_is_cached_per_settings_object() -> None:
    settings = Settings(AI_PROVIDER="mock")
    first = get_provider(settings)
    assert first.name == "mock"
    assert get_provider(settings) is first
    assert get_provider(Settings(AI_PROVIDER="mock")) is not first


def test_anthropic_from_environment_keys() -> None:
    settings = Settings(AI_PROVIDER="anthropic", ANTHROPIC_API_KEY="sk-ant-x",
                        ANTHROPIC_MODEL="claude-haiku-4-5", ANTHROPIC_BASE_URL="http://127.0.0.1:9")
    provider = get_provider(settings)
    assert isinstance(provider, AnthropicProvider)
    assert provider.identity() == "anthropic:claude-haiku-4-5"


def test_openai_from_environment_keys() -> None:
    settings = Settings(AI_PROVIDER="openai", OPENAI_API_KEY="sk-x", OPENAI_MODEL="gpt-4.1-mini")
    provider = get_provider(settings)
    assert isinstance(provider, OpenAICompatibleProvider)
    assert provider.identity() == "openai:gpt-4.1-mini"


@pytest.mark.parametrize(("vendor", "variable"),
                         [("anthropic", "ANTHROPIC_API_KEY"), ("openai", "OPENAI_API_KEY")])
def test_missing_key_names_the_variable(vendor: str, variable: str) -> None:
    with pytest.raises(ProviderError, match=variable) as info:
        get_provider(Settings(AI_PROVIDER=vendor))
    assert info.value.retryable is False


@mock_aws
def test_keys_come_from_secrets_manager_when_an_arn_is_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    arn = boto3.client("secretsmanager", region_name="us-east-1").create_secret(
        Name="stepwise/providers", SecretString=json.dumps({"OPENAI_API_KEY": "sk-from-secret"}))["ARN"]

    settings = Settings(AI_PROVIDER="openai", OPENAI_API_KEY="sk-env-ignored", PROVIDER_SECRET_ARN=arn)
    openai = get_provider(settings)
    assert isinstance(openai, OpenAICompatibleProvider)
    assert openai._client.headers["authorization"] == "Bearer sk-from-secret"

    with pytest.raises(ProviderError, match="ANTHROPIC_API_KEY is missing from the provider secret"):
        get_provider(Settings(AI_PROVIDER="anthropic", ANTHROPIC_API_KEY="sk-env", PROVIDER_SECRET_ARN=arn))


@mock_aws
def test_unreadable_secret_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    arn = "arn:aws:secretsmanager:us-east-1:123456789012:secret:missing-AbCdEf"
    with pytest.raises(ProviderError, match="PROVIDER_SECRET_ARN"):
        get_provider(Settings(AI_PROVIDER="anthropic", PROVIDER_SECRET_ARN=arn))
