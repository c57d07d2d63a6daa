"""Deployment configuration read from CDK context, validated at synth time.

Two kinds of values:
- *application* settings (CONTRACT §7) become each function's environment. Their context keys are
  the camelCase of the variable name (`AI_PROVIDER` -> `aiProvider`), their defaults are the ones
  `shared.settings.Settings` declares, and the merged values are validated by that same model, so a
  bad value fails `cdk synth` with the variable's name instead of failing every cold start.
- *deployment* settings (origins, alarm thresholds, concurrency caps) only shape resources.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from shared import constants as c
from shared import limits
from shared.settings import Settings

# Application settings a deployment may set. Secrets (API keys, the webhook secret) live in Secrets
# Manager, and the local-only knobs (mock script, local tokens) have no meaning on AWS.
APP_SETTING_VARS: tuple[str, ...] = (
    c.AI_PROVIDER,
    c.ANTHROPIC_MODEL,
    c.ANTHROPIC_BASE_URL,
    c.OPENAI_MODEL,
    c.OPENAI_BASE_URL,
    c.REQUIRE_PLAN_APPROVAL,
    c.PLAN_APPROVAL_TIMEOUT_SECONDS,
    c.ALLOW_LINEAR_FALLBACK,
    c.TASK_TIMEOUT_SECONDS,
    c.TASK_MAX_ATTEMPTS,
    c.TASK_RETRY_BASE_SECONDS,
    c.BUILD_TIMEOUT_SECONDS,
    c.TASK_CACHE_TTL_SECONDS,
    c.RECORD_TTL_DAYS,
    c.WEBHOOK_URL,
    c.WEBHOOK_ALLOWED_HOSTS,
    c.WEBHOOK_MAX_ATTEMPTS,
    c.WEBHOOK_BACKOFF_BASE_SECONDS,
    c.WEBHOOK_BACKOFF_MAX_SECONDS,
)

# Deployment settings: context key -> (default, parser).
_DEPLOYMENT_DEFAULTS: dict[str, Any] = {
    "frontendOrigin": "http://localhost:3000",
    "alarmEmail": None,
    "costAlarmUsdPerHour": 5.0,
    "errorRateAlarmPercent": 5.0,
    "failedExecutionsAlarmThreshold": 3,
    "apiRateLimit": 50.0,
    "apiBurstLimit": 100,
    "taskMaxConcurrency": 20,
    "webhookMaxConcurrency": 5,
    "logRetentionDays": 30,
    "apiCloudWatchRole": True,
}


class ConfigError(ValueError):
    """A context value is invalid; the message names the context key."""


def context_key(env_var: str) -> str:
    """`TASK_CACHE_TTL_SECONDS` -> `taskCacheTtlSeconds`."""
    head, *rest = env_var.lower().split("_")
    return head + "".join(part.capitalize() for part in rest)


def _env_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _as_bool(key: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in {"true", "1", "yes"}:
        return True
    if text in {"false", "0", "no"}:
        return False
    raise ConfigError(f"context {key}: expected true/false, got {value!r}")


def _as_number(key: str, value: Any, *, minimum: float, integer: bool) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"context {key}: expected a number, got {value!r}") from None
    if math.isnan(number) or number < minimum or (integer and not number.is_integer()):
        kind = "an integer" if integer else "a number"
        raise ConfigError(f"context {key}: expected {kind} >= {minimum}, got {value!r}")
    return number


@dataclass(frozen=True)
class StackConfig:
    settings: Settings
    app_env: dict[str, str]
    frontend_origin: str
    alarm_email: str | None
    cost_alarm_usd_per_hour: float
    error_rate_alarm_percent: float
    failed_executions_alarm_threshold: int
    api_rate_limit: float
    api_burst_limit: int
    task_max_concurrency: int
    webhook_max_concurrency: int
    log_retention_days: int
    api_cloudwatch_role: bool

    @property
    def record_ttl_days(self) -> int:
        """RECORD_TTL_DAYS: builds, tasks, events, cache entries and files expire together."""
        return self.settings.record_ttl_days

    @property
    def task_function_timeout_seconds(self) -> int:
        """The task handler enforces TASK_TIMEOUT_SECONDS itself; the margin lets it record the timeout."""
        return limits.function_timeout_s("task", self.settings.task_timeout_seconds)

    @classmethod
    def from_context(cls, get: Callable[[str], Any]) -> StackConfig:
        """Build from a context getter (`node.try_get_context`)."""
        return cls.from_mapping({k: v for k in _all_keys() if (v := get(k)) is not None})

    @classmethod
    def from_mapping(cls, context: Mapping[str, Any]) -> StackConfig:
        values = {**_DEPLOYMENT_DEFAULTS, **{k: v for k, v in context.items() if v is not None}}

        given = {
            var: context[context_key(var)] for var in APP_SETTING_VARS if context.get(context_key(var)) is not None
        }
        try:
            settings = Settings.model_validate({var: _env_text(v) for var, v in given.items()})
        except ValidationError as exc:
            problems = []
            for err in exc.errors():
                var = str(err["loc"][0]) if err["loc"] else "?"
                problems.append(f"context {context_key(var)} ({var}): {err['msg']}")
            raise ConfigError("; ".join(problems)) from None
        app_env: dict[str, str] = {}
        for var in APP_SETTING_VARS:
            field = next(name for name, f in Settings.model_fields.items() if f.alias == var)
            value = getattr(settings, field)
            if value is not None and value != "":
                app_env[var] = _env_text(value)

        origin = str(values["frontendOrigin"]).rstrip("/")
        if not origin.startswith(("https://", "http://localhost", "http://127.0.0.1")):
            raise ConfigError(f"context frontendOrigin: expected an https:// origin, got {origin!r}")
        email = values["alarmEmail"]
        if email is not None and "@" not in str(email):
            raise ConfigError(f"context alarmEmail: expected an e-mail address, got {email!r}")

        def num(key: str, minimum: float = 0, integer: bool = False) -> float:
            return _as_number(key, values[key], minimum=minimum, integer=integer)

        return cls(
            settings=settings,
            app_env=app_env,
            frontend_origin=origin,
            alarm_email=str(email) if email else None,
            cost_alarm_usd_per_hour=num("costAlarmUsdPerHour"),
            error_rate_alarm_percent=num("errorRateAlarmPercent"),
            failed_executions_alarm_threshold=int(num("failedExecutionsAlarmThreshold", 1, True)),
            api_rate_limit=num("apiRateLimit", 1),
            api_burst_limit=int(num("apiBurstLimit", 1, True)),
            task_max_concurrency=int(num("taskMaxConcurrency", 2, True)),
            webhook_max_concurrency=int(num("webhookMaxConcurrency", 2, True)),
            log_retention_days=int(num("logRetentionDays", 1, True)),
            api_cloudwatch_role=_as_bool("apiCloudWatchRole", values["apiCloudWatchRole"]),
        )


def _all_keys() -> list[str]:
    return [*_DEPLOYMENT_DEFAULTS, *(context_key(v) for v in APP_SETTING_VARS)]


def known_context_keys() -> list[str]:
    """Every context key this app reads (documented in infra/README.md)."""
    return _all_keys()
