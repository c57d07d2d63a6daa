"""Deployment configuration: a committed stage file, validated at synth time.

`-c stage=<name>` picks `infra/stages/<name>.json` (default `dev`). A stage file holds two kinds of
values, under the same keys CDK context uses:
- *application* settings (the environment variables of `shared.settings.Settings`) become each
  function's environment. Their keys are the camelCase of the variable name (`AI_PROVIDER` ->
  `aiProvider`), their defaults are the ones `Settings` declares (except `aiProvider`, which is
  `bedrock` on AWS), and they are validated by that same model, so a bad value fails `cdk synth`
  with the variable's name instead of failing every cold start.
- *deployment* settings (`Deployment` below: account, region, origins, alarm thresholds,
  concurrency) shape resources.

A stage marked `"production": true` must pin its account and region, name an alarm e-mail, use an
https origin and a real AI provider, and takes no `-c` overrides of its settings: what is deployed
is what is committed. Other stages accept `-c key=value` overrides (handy for a one-off test).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from shared import constants as c
from shared import limits
from shared.settings import Settings

STAGES_DIR = Path(__file__).resolve().parent / "stages"
DEFAULT_STAGE = "dev"
STAGE_KEY = "stage"

# Lambda's hard limit, and what the task function keeps beyond TASK_TIMEOUT_SECONDS to record a
# timeout, hand off dependents and report (so TASK_TIMEOUT_SECONDS may be at most 840).
LAMBDA_MAX_TIMEOUT_S = limits.LAMBDA_MAX_TIMEOUT_S
TASK_TIMEOUT_MARGIN_S = limits.TASK_FUNCTION_MARGIN_S
# The dispatcher's reserved concurrency also serves the state machine's direct invocations and the
# tasks-DLQ consumer, so the task-finished consumer gets what is left after this headroom.
DISPATCH_HEADROOM = 4

# Application settings a deployment may set. Secrets (API keys, the webhook secret) live in Secrets
# Manager, and the local-only knobs (mock script, local tokens) have no meaning on AWS.
APP_SETTING_VARS: tuple[str, ...] = (
    c.AI_PROVIDER,
    c.BEDROCK_MODEL_ID,
    c.ANTHROPIC_MODEL,
    c.ANTHROPIC_BASE_URL,
    c.OPENAI_MODEL,
    c.OPENAI_BASE_URL,
    c.REQUIRE_PLAN_APPROVAL,
    c.PLAN_APPROVAL_TIMEOUT_SECONDS,
    c.ALLOW_LINEAR_FALLBACK,
    c.STREAM_EXECUTION,
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
# On AWS the natural provider is Claude on Bedrock (IAM, no key); locally it stays the mock.
AWS_APP_DEFAULTS: dict[str, Any] = {c.AI_PROVIDER: "bedrock"}


class ConfigError(ValueError):
    """A stage or context value is invalid; the message names the setting."""


class Deployment(BaseModel):
    """Deployment settings; each field's alias is its stage-file / context key."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=False)

    production: bool = False
    account: str | None = Field(None, pattern=r"^\d{12}$")
    region: str | None = Field(None, pattern=r"^[a-z]{2}(-gov|-iso[a-z]?)?-[a-z]+-\d+$")
    stack_name: str = Field("Stepwise", alias="stackName", pattern=r"^[A-Za-z][A-Za-z0-9-]{0,127}$")
    frontend_origin: str = Field("http://localhost:3000", alias="frontendOrigin")
    callback_urls: tuple[str, ...] = Field((), alias="callbackUrls")
    logout_urls: tuple[str, ...] = Field((), alias="logoutUrls")
    auth_domain_prefix: str | None = Field(
        None, alias="authDomainPrefix", pattern=r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$"
    )
    alarm_email: str | None = Field(None, alias="alarmEmail", pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
    cost_alarm_usd_per_hour: float = Field(5.0, ge=0, alias="costAlarmUsdPerHour")
    error_rate_alarm_percent: float = Field(5.0, gt=0, le=100, alias="errorRateAlarmPercent")
    failed_executions_alarm_threshold: int = Field(3, ge=1, alias="failedExecutionsAlarmThreshold")
    queue_age_alarm_seconds: int = Field(900, ge=60, alias="queueAgeAlarmSeconds")
    api_rate_limit: float = Field(50.0, ge=1, alias="apiRateLimit")
    api_burst_limit: int = Field(100, ge=1, alias="apiBurstLimit")
    task_max_concurrency: int = Field(20, ge=2, le=1000, alias="taskMaxConcurrency")
    webhook_max_concurrency: int = Field(5, ge=2, le=1000, alias="webhookMaxConcurrency")
    dispatch_reserved_concurrency: int = Field(10, ge=DISPATCH_HEADROOM + 2, alias="dispatchReservedConcurrency")
    plan_reserved_concurrency: int = Field(5, ge=1, alias="planReservedConcurrency")
    log_retention_days: int = Field(30, ge=1, alias="logRetentionDays")
    api_cloud_watch_role: bool = Field(True, alias="apiCloudWatchRole")

    @field_validator("callback_urls", "logout_urls", mode="before")
    @classmethod
    def _url_list(cls, value: Any) -> Any:
        if isinstance(value, str):  # `-c callbackUrls=a,b`
            return tuple(u.strip() for u in value.split(",") if u.strip())
        return value

    @field_validator("frontend_origin")
    @classmethod
    def _origin(cls, value: str) -> str:
        value = value.rstrip("/")
        if not value.startswith(("https://", "http://localhost", "http://127.0.0.1")):
            raise ValueError(f"expected an https:// origin, got {value!r}")
        return value

    @field_validator("callback_urls", "logout_urls")
    @classmethod
    def _urls(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for url in value:
            if not url.startswith(("https://", "http://localhost", "http://127.0.0.1")):
                raise ValueError(f"expected https:// URLs, got {url!r}")
        return value


DEPLOYMENT_KEYS: tuple[str, ...] = tuple(f.alias or name for name, f in Deployment.model_fields.items())


@dataclass(frozen=True)
class StackConfig:
    stage: str
    deployment: Deployment
    settings: Settings
    app_env: dict[str, str]

    # Shortcuts for the constructs.
    @property
    def production(self) -> bool:
        return self.deployment.production

    @property
    def frontend_origin(self) -> str:
        return self.deployment.frontend_origin

    @property
    def alarm_email(self) -> str | None:
        return self.deployment.alarm_email

    @property
    def callback_urls(self) -> tuple[str, ...]:
        """Where Cognito may send the browser after sign-in: the stage's list, or the origin."""
        return self.deployment.callback_urls or (self.deployment.frontend_origin + "/",)

    @property
    def logout_urls(self) -> tuple[str, ...]:
        return self.deployment.logout_urls or (self.deployment.frontend_origin + "/",)

    @property
    def record_ttl_days(self) -> int:
        """RECORD_TTL_DAYS: builds, tasks, events, cache entries and files expire together."""
        return self.settings.record_ttl_days

    @property
    def task_function_timeout_seconds(self) -> int:
        """The task handler enforces TASK_TIMEOUT_SECONDS itself; the margin lets it record the timeout."""
        return limits.function_timeout_s("task", self.settings.task_timeout_seconds)

    @property
    def dispatch_queue_concurrency(self) -> int:
        """Maximum concurrency of the task-finished consumer, below the dispatcher's reservation so
        the event source never gets throttled (a throttled FIFO batch would count a receive)."""
        return self.deployment.dispatch_reserved_concurrency - DISPATCH_HEADROOM

    @classmethod
    def from_context(cls, get: Callable[[str], Any], *, stages_dir: Path = STAGES_DIR) -> StackConfig:
        """The stage named by context `stage` (default dev), with context overrides applied."""
        stage = str(get(STAGE_KEY) or DEFAULT_STAGE)
        overrides = {k: v for k in known_context_keys() if (v := get(k)) is not None}
        return cls.from_stage(stage, overrides, stages_dir=stages_dir)

    @classmethod
    def from_stage(
        cls, stage: str, overrides: Mapping[str, Any] | None = None, *, stages_dir: Path = STAGES_DIR
    ) -> StackConfig:
        path = stages_dir / f"{stage}.json"
        if not stage.replace("-", "").isalnum() or not path.is_file():
            known = sorted(p.stem for p in stages_dir.glob("*.json"))
            raise ConfigError(f"context stage: no stage file {path.name} (stages: {', '.join(known)})")
        try:
            values = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise ConfigError(f"stage {stage}: {path.name} is not valid JSON: {exc}") from None
        if not isinstance(values, dict):
            raise ConfigError(f"stage {stage}: {path.name} must hold a JSON object")
        overrides = dict(overrides or {})
        if values.get("production") is True:
            changed = sorted(k for k, v in overrides.items() if values.get(k) != v)
            if changed:
                raise ConfigError(
                    f"context {', '.join(changed)}: stage {stage} is a production stage; "
                    f"change {path.relative_to(path.parent.parent.parent)} instead of passing -c"
                )
        try:
            return cls.from_mapping({**values, **overrides}, stage=stage)
        except ConfigError as exc:
            raise ConfigError(f"stage {stage}: {exc}") from None

    @classmethod
    def from_mapping(cls, context: Mapping[str, Any], *, stage: str = DEFAULT_STAGE) -> StackConfig:
        context = {k: v for k, v in context.items() if v is not None}
        app_keys = {context_key(var): var for var in APP_SETTING_VARS}
        unknown = sorted(set(context) - set(app_keys) - set(DEPLOYMENT_KEYS))
        if unknown:
            raise ConfigError(f"{', '.join(unknown)}: unknown setting (known: see infra/README.md)")

        deployment_values = {k: v for k, v in context.items() if k in DEPLOYMENT_KEYS}
        try:
            deployment = Deployment.model_validate(deployment_values)
        except ValidationError as exc:
            raise ConfigError(_problems(exc, lambda loc: loc)) from None

        given = {**AWS_APP_DEFAULTS, **{var: context[key] for key, var in app_keys.items() if key in context}}
        try:
            settings = Settings.model_validate({var: _env_text(v) for var, v in given.items()})
        except ValidationError as exc:
            raise ConfigError(_problems(exc, lambda var: f"{context_key(var)} ({var})")) from None
        app_env: dict[str, str] = {}
        for var in APP_SETTING_VARS:
            field = next(name for name, f in Settings.model_fields.items() if f.alias == var)
            value = getattr(settings, field)
            if value is not None and value != "":
                app_env[var] = _env_text(value)

        config = cls(stage=stage, deployment=deployment, settings=settings, app_env=app_env)
        config._check()
        return config

    def _check(self) -> None:
        """Rules across settings, and what a production stage must have."""
        s, d = self.settings, self.deployment
        limit = LAMBDA_MAX_TIMEOUT_S - TASK_TIMEOUT_MARGIN_S
        if s.task_timeout_seconds > limit:
            raise ConfigError(
                f"taskTimeoutSeconds ({c.TASK_TIMEOUT_SECONDS}): at most {limit} on AWS, got "
                f"{s.task_timeout_seconds:g} (the task function keeps {TASK_TIMEOUT_MARGIN_S} s of its "
                f"{LAMBDA_MAX_TIMEOUT_S} s to record a timeout and report)"
            )
        if d.region and s.ai_provider == "bedrock":
            geo = s.bedrock_model_id.split(".", 1)[0]
            prefixes = {"us": "us-", "eu": "eu-", "apac": "ap-", "jp": "ap-", "au": "ap-", "ca": "ca-"}
            if geo in prefixes and not d.region.startswith(prefixes[geo]):
                raise ConfigError(
                    f"bedrockModelId ({c.BEDROCK_MODEL_ID}): inference profile {s.bedrock_model_id!r} "
                    f"cannot be called from region {d.region}"
                )
        if not d.production:
            return
        if s.ai_provider == "mock":
            raise ConfigError(f"aiProvider ({c.AI_PROVIDER}): a production stage cannot use the mock provider")
        if not d.frontend_origin.startswith("https://"):
            raise ConfigError(f"frontendOrigin: a production stage needs an https:// origin, got {d.frontend_origin!r}")
        for key, urls in (("callbackUrls", self.callback_urls), ("logoutUrls", self.logout_urls)):
            if any(not u.startswith("https://") for u in urls):
                raise ConfigError(f"{key}: a production stage needs https:// URLs, got {list(urls)}")
        for key, value in (("alarmEmail", d.alarm_email), ("account", d.account), ("region", d.region)):
            if not value:
                raise ConfigError(f"{key}: a production stage must set it")


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


def _problems(exc: ValidationError, name: Callable[[str], str]) -> str:
    problems = []
    for err in exc.errors():
        loc = str(err["loc"][0]) if err["loc"] else "?"
        problems.append(f"{name(loc)}: {err['msg']} (got {err.get('input')!r})")
    return "; ".join(problems)


def known_context_keys() -> list[str]:
    """Every setting key a stage file or `-c` may hold (documented in infra/README.md)."""
    return [*DEPLOYMENT_KEYS, *(context_key(v) for v in APP_SETTING_VARS)]
