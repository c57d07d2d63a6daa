"""Typed configuration (docs/configuration.md): defaults, and a bad value fails at start naming the variable."""

from __future__ import annotations

import pytest

from shared import constants as c
from shared.settings import ConfigurationError, Settings, get_settings, load_settings, reset_settings

# docs/configuration.md, copied: every user-facing variable.
CONTRACT_VARIABLES = [
    "AI_PROVIDER",
    "BEDROCK_MODEL_ID",
    "ANTHROPIC_API_KEY",
    "ANTHROPIC_MODEL",
    "ANTHROPIC_BASE_URL",
    "OPENAI_API_KEY",
    "OPENAI_BASE_URL",
    "OPENAI_MODEL",
    "STEPWISE_MOCK_SCRIPT",
    "REQUIRE_PLAN_APPROVAL",
    "PLAN_APPROVAL_TIMEOUT_SECONDS",
    "ALLOW_LINEAR_FALLBACK",
    "TASK_TIMEOUT_SECONDS",
    "TASK_MAX_ATTEMPTS",
    "BUILD_TIMEOUT_SECONDS",
    "TASK_CACHE_TTL_SECONDS",
    "WEBHOOK_URL",
    "WEBHOOK_SECRET",
    "WEBHOOK_ALLOWED_HOSTS",
    "WEBHOOK_MAX_ATTEMPTS",
    "WEBHOOK_BACKOFF_BASE_SECONDS",
    "WEBHOOK_BACKOFF_MAX_SECONDS",
    "STEPWISE_LOCAL_TOKENS",
    "RECORD_TTL_DAYS",
]


@pytest.fixture
def env(monkeypatch):
    """A clean environment: none of Stepwise's variables set."""
    for field in Settings.model_fields.values():
        if field.alias:
            monkeypatch.delenv(field.alias, raising=False)
    reset_settings()
    yield monkeypatch
    reset_settings()


def test_defaults_match_the_contract(env):
    s = load_settings()
    assert s.ai_provider == "mock"
    assert s.require_plan_approval is False
    assert s.plan_approval_timeout_seconds == 300
    assert s.allow_linear_fallback is True
    assert s.task_timeout_seconds == 60
    assert s.task_max_attempts == 3
    assert s.build_timeout_seconds == 900
    assert s.task_cache_ttl_seconds == 3600
    assert s.tokens == {"dev-token": "dev"}
    assert s.allowed_hosts == frozenset()
    assert s.webhook_url is None and s.mock_script is None


def test_every_contract_variable_is_a_named_constant_read_by_the_settings(env):
    aliases = {f.alias for f in Settings.model_fields.values()}
    for name in CONTRACT_VARIABLES:
        assert getattr(c, name) == name
        assert name in aliases, name


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("TASK_MAX_ATTEMPTS", "zero"),
        ("TASK_MAX_ATTEMPTS", "0"),
        ("AI_PROVIDER", "nope"),
        ("STEPWISE_LOCAL_TOKENS", "bad"),
        ("STEPWISE_LOCAL_TOKENS", "tok:alice,:bob"),
        ("TASK_TIMEOUT_SECONDS", "-1"),
        ("BUILD_TIMEOUT_SECONDS", "0"),
        ("PLAN_APPROVAL_TIMEOUT_SECONDS", "soon"),
        ("ALLOW_LINEAR_FALLBACK", "maybe"),
        ("REQUIRE_PLAN_APPROVAL", "perhaps"),
        ("TASK_CACHE_TTL_SECONDS", "-5"),
        ("WEBHOOK_MAX_ATTEMPTS", "0"),
        ("BEDROCK_MODEL_ID", "meta.llama3-70b-instruct-v1:0"),
        ("BEDROCK_MODEL_ID", "anthropic.claude/../../x"),
    ],
)
def test_an_invalid_value_fails_naming_the_variable(env, variable, value):
    env.setenv(variable, value)
    with pytest.raises(ConfigurationError) as info:
        load_settings()
    assert variable in str(info.value)
    assert repr(value) in str(info.value)


def test_every_bad_variable_is_named_at_once(env):
    env.setenv("TASK_MAX_ATTEMPTS", "zero")
    env.setenv("AI_PROVIDER", "nope")
    env.setenv("STEPWISE_LOCAL_TOKENS", "bad")
    with pytest.raises(ConfigurationError) as info:
        get_settings()
    for variable in ("TASK_MAX_ATTEMPTS", "AI_PROVIDER", "STEPWISE_LOCAL_TOKENS"):
        assert variable in str(info.value)


def test_valid_values_are_parsed(env):
    env.setenv("AI_PROVIDER", "openai")
    env.setenv("REQUIRE_PLAN_APPROVAL", "true")
    env.setenv("ALLOW_LINEAR_FALLBACK", "false")
    env.setenv("TASK_TIMEOUT_SECONDS", "2.5")
    env.setenv("TASK_MAX_ATTEMPTS", "5")
    env.setenv("STEPWISE_LOCAL_TOKENS", "t1:alice, t2:bob")
    env.setenv("WEBHOOK_ALLOWED_HOSTS", " Hooks.Example.com, ,localhost ")
    s = load_settings()
    assert s.ai_provider == "openai"
    assert s.require_plan_approval is True and s.allow_linear_fallback is False
    assert s.task_timeout_seconds == 2.5 and s.task_max_attempts == 5
    assert s.tokens == {"t1": "alice", "t2": "bob"}
    assert s.allowed_hosts == frozenset({"hooks.example.com", "localhost"})


def test_secrets_never_show_in_the_settings_repr(env):
    env.setenv("WEBHOOK_SECRET", "whsec_c2VjcmV0c2VjcmV0c2VjcmV0")
    env.setenv("ANTHROPIC_API_KEY", "sk-ant-verysecretkey123")
    env.setenv("OPENAI_API_KEY", "sk-openaisecret12345")
    text = repr(load_settings())
    for secret in ("whsec_c2VjcmV0", "sk-ant-verysecret", "sk-openaisecret"):
        assert secret not in text


def test_settings_are_read_once_until_reset(env):
    env.setenv("TASK_MAX_ATTEMPTS", "4")
    first = get_settings()
    env.setenv("TASK_MAX_ATTEMPTS", "6")
    assert get_settings() is first and first.task_max_attempts == 4
    reset_settings()
    assert get_settings().task_max_attempts == 6


def test_missing_credentials_names_the_variable_the_chosen_provider_needs():
    from shared.settings import Settings, missing_credentials

    assert missing_credentials(Settings(AI_PROVIDER="mock")) is None
    assert "ANTHROPIC_API_KEY" in (missing_credentials(Settings(AI_PROVIDER="anthropic")) or "")
    assert "OPENAI_API_KEY" in (missing_credentials(Settings(AI_PROVIDER="openai", OPENAI_API_KEY="  ")) or "")
    assert missing_credentials(Settings(AI_PROVIDER="anthropic", ANTHROPIC_API_KEY="sk-ant-x")) is None
    # On AWS the key comes from the provider secret, read when the provider is first used.
    assert missing_credentials(Settings(AI_PROVIDER="openai", PROVIDER_SECRET_ARN="arn:aws:secretsmanager:x")) is None


def test_record_ttl_days_defaults_to_30_and_is_validated(env):
    from shared.settings import ConfigurationError, load_settings

    assert load_settings().record_ttl_seconds == 30 * 86_400
    env.setenv("RECORD_TTL_DAYS", "0")
    with pytest.raises(ConfigurationError, match="RECORD_TTL_DAYS"):
        load_settings()
