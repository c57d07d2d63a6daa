"""Typed configuration from the environment (docs/configuration.md), parsed once.

An invalid value fails at start with a message that names the variable.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Literal

from pydantic import AliasChoices, Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared import constants as c
from shared.models.plan import MAX_PLAN_TASKS

DEFAULT_BEDROCK_MODEL_ID = "us.anthropic.claude-sonnet-4-5-20250929-v1:0"
# `[geo.]anthropic.<model>-v<n>:<m>`: a foundation model id, or a system inference profile's id.
BEDROCK_MODEL_ID_PATTERN = r"^(?:(?:us|eu|apac|jp|au|ca|us-gov|global)\.)?anthropic\.[a-z0-9-]+(?:-v\d+(?::\d+)?)?$"


class ConfigurationError(RuntimeError):
    """Raised at start when an environment variable holds an invalid value."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(case_sensitive=True, extra="ignore", populate_by_name=True)

    ai_provider: Literal["mock", "anthropic", "openai", "bedrock"] = Field("mock", alias=c.AI_PROVIDER)
    anthropic_api_key: str | None = Field(None, alias=c.ANTHROPIC_API_KEY, repr=False)
    anthropic_model: str = Field("claude-sonnet-4-5", alias=c.ANTHROPIC_MODEL)
    anthropic_base_url: str | None = Field(None, alias=c.ANTHROPIC_BASE_URL)
    # Claude on Amazon Bedrock: a model id or a cross-region inference profile id (`us.`, `eu.`,
    # `apac.`, `global.` prefix). IAM credentials from the runtime, no key.
    bedrock_model_id: str = Field(
        DEFAULT_BEDROCK_MODEL_ID, alias=c.BEDROCK_MODEL_ID, pattern=BEDROCK_MODEL_ID_PATTERN
    )
    openai_api_key: str | None = Field(None, alias=c.OPENAI_API_KEY, repr=False)
    openai_base_url: str = Field("https://api.openai.com/v1", alias=c.OPENAI_BASE_URL)
    openai_model: str = Field("gpt-4o-mini", alias=c.OPENAI_MODEL)
    mock_script: str | None = Field(None, alias=c.STEPWISE_MOCK_SCRIPT)

    require_plan_approval: bool = Field(False, alias=c.REQUIRE_PLAN_APPROVAL)
    plan_approval_timeout_seconds: int = Field(300, ge=1, le=86_400, alias=c.PLAN_APPROVAL_TIMEOUT_SECONDS)
    allow_linear_fallback: bool = Field(True, alias=c.ALLOW_LINEAR_FALLBACK)
    stream_execution: bool = Field(True, alias=c.STREAM_EXECUTION)
    task_timeout_seconds: float = Field(60, gt=0, le=900, alias=c.TASK_TIMEOUT_SECONDS)
    task_max_attempts: int = Field(3, ge=1, le=10, alias=c.TASK_MAX_ATTEMPTS)
    task_retry_base_seconds: float = Field(1.0, ge=0, le=300, alias=c.TASK_RETRY_BASE_SECONDS)
    build_timeout_seconds: int = Field(900, ge=1, le=86_400, alias=c.BUILD_TIMEOUT_SECONDS)
    task_cache_ttl_seconds: int = Field(3600, ge=0, alias=c.TASK_CACHE_TTL_SECONDS)
    record_ttl_days: int = Field(30, ge=1, le=3650, alias=c.RECORD_TTL_DAYS)
    # Lower it to keep plans small; it cannot go above the size every record's bound is designed for.
    max_plan_tasks: int = Field(MAX_PLAN_TASKS, ge=1, le=MAX_PLAN_TASKS, alias=c.MAX_PLAN_TASKS)

    webhook_url: str | None = Field(None, alias=c.WEBHOOK_URL)
    webhook_secret: str | None = Field(None, alias=c.WEBHOOK_SECRET, repr=False)
    webhook_allowed_hosts: str = Field("", alias=c.WEBHOOK_ALLOWED_HOSTS)
    webhook_max_attempts: int = Field(8, ge=1, le=100, alias=c.WEBHOOK_MAX_ATTEMPTS)
    webhook_backoff_base_seconds: float = Field(2.0, ge=0, alias=c.WEBHOOK_BACKOFF_BASE_SECONDS)
    webhook_backoff_max_seconds: float = Field(3600.0, ge=0, alias=c.WEBHOOK_BACKOFF_MAX_SECONDS)
    local_tokens: str = Field("dev-token:dev", alias=c.STEPWISE_LOCAL_TOKENS)
    cors_origins: str = Field("*", alias=c.STEPWISE_CORS_ORIGINS)

    # wiring
    builds_table: str = Field("stepwise-builds", alias=c.BUILDS_TABLE)
    tasks_table: str = Field("stepwise-tasks", alias=c.TASKS_TABLE)
    events_table: str = Field("stepwise-events", alias=c.EVENTS_TABLE)
    cache_table: str = Field("stepwise-cache", alias=c.CACHE_TABLE)
    idempotency_table: str = Field("stepwise-idempotency", alias=c.IDEMPOTENCY_TABLE)
    files_bucket: str = Field("stepwise-files", alias=c.FILES_BUCKET)
    tasks_queue_url: str = Field("", alias=c.TASKS_QUEUE_URL)
    task_finished_queue_url: str = Field("", alias=c.TASK_FINISHED_QUEUE_URL)
    webhook_queue_url: str = Field("", alias=c.WEBHOOK_QUEUE_URL)
    state_machine_arn: str = Field("", alias=c.STATE_MACHINE_ARN)
    webhook_secret_arn: str | None = Field(None, alias=c.WEBHOOK_SECRET_ARN)
    provider_secret_arn: str | None = Field(None, alias=c.PROVIDER_SECRET_ARN)
    connections_table: str = Field("stepwise-connections", alias=c.CONNECTIONS_TABLE)
    websocket_callback_url: str = Field("", alias=c.WEBSOCKET_CALLBACK_URL)
    cognito_issuer: str = Field("", alias=c.COGNITO_ISSUER)
    cognito_client_id: str = Field("", alias=c.COGNITO_CLIENT_ID)
    cognito_domain: str = Field("", alias=c.COGNITO_DOMAIN, pattern=r"^$|^https?://\S+[^/]$")

    @field_validator("webhook_allowed_hosts")
    @classmethod
    def _normalise_hosts(cls, v: str) -> str:
        return ",".join(h.strip().lower() for h in v.split(",") if h.strip())

    @field_validator("local_tokens")
    @classmethod
    def _tokens_shape(cls, v: str) -> str:
        for pair in filter(None, (p.strip() for p in v.split(","))):
            token, sep, user = pair.partition(":")
            if not sep or not token or not user:
                raise ValueError("expected token:user[,token2:user2]")
        return v

    @field_validator("cors_origins")
    @classmethod
    def _origins_shape(cls, v: str) -> str:
        origins = [o.strip().rstrip("/") for o in v.split(",") if o.strip()]
        for origin in origins:
            if origin != "*" and not origin.startswith(("https://", "http://")):
                raise ValueError(f"expected * or origins like https://app.example.com, got {origin!r}")
        return ",".join(origins) or "*"

    @property
    def cors_origin_list(self) -> list[str]:
        return self.cors_origins.split(",")

    @property
    def allowed_hosts(self) -> frozenset[str]:
        return frozenset(filter(None, self.webhook_allowed_hosts.split(",")))

    @property
    def record_ttl_seconds(self) -> int:
        """How long builds, tasks, events, cache entries and files are kept (RECORD_TTL_DAYS)."""
        return self.record_ttl_days * 86_400

    @property
    def cognito(self) -> bool:
        """`stepwise serve` signs its dashboard in through this user pool and accepts the pool's JWTs
        (COGNITO_ISSUER, COGNITO_CLIENT_ID and COGNITO_DOMAIN all set)."""
        return bool(self.cognito_issuer and self.cognito_client_id and self.cognito_domain)

    @property
    def tokens(self) -> dict[str, str]:
        pairs = (p.strip().partition(":") for p in self.local_tokens.split(",") if p.strip())
        return {token: user for token, _, user in pairs}


def missing_credentials(settings: Settings) -> str | None:
    """What the chosen provider lacks to make a single call, naming the variable; None if nothing.
    (On AWS the keys come from the provider secret, PROVIDER_SECRET_ARN.)"""
    needs = {"anthropic": (c.ANTHROPIC_API_KEY, settings.anthropic_api_key),
             "openai": (c.OPENAI_API_KEY, settings.openai_api_key)}
    if settings.ai_provider not in needs or settings.provider_secret_arn:
        return None
    variable, value = needs[settings.ai_provider]
    if value and value.strip():
        return None
    return f"{variable} is not set; it is required when {c.AI_PROVIDER}={settings.ai_provider}"


def _alias_of(field_name: str) -> str:
    field = Settings.model_fields.get(field_name)
    alias = field.alias if field else None
    if isinstance(alias, AliasChoices):  # pragma: no cover - not used, kept for safety
        return str(alias.choices[0])
    return alias or field_name


def load_settings() -> Settings:
    """Parse the environment; raise ConfigurationError naming each bad variable."""
    try:
        return Settings()
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            name = _alias_of(str(err["loc"][0])) if err["loc"] else "?"
            problems.append(f"{name}: {err['msg']} (got {err.get('input')!r})")
        raise ConfigurationError("invalid configuration: " + "; ".join(problems)) from None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return load_settings()


def reset_settings() -> None:
    """Forget the cached settings (tests and the local runtime change the environment)."""
    get_settings.cache_clear()
