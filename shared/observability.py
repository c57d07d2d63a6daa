"""The one place Logger, Tracer and Metrics are created; every handler wraps itself the same way.

Logs carry `buildId` as the correlation id. Secrets and personal data never reach a log line: the
Logger's one formatter (`MaskingFormatter`) masks every string of every line before it is written,
whatever the call site passed — API keys, webhook secrets, bearer tokens, `password=`/`api_key=`
values, e-mail addresses, card numbers, the values of keys named like secrets — and replaces any
long text (a prompt, a file) by its length and hash. Call sites log `fingerprint(text)` for texts
on purpose; the formatter is the net under every line, not a helper each call site must remember.

Metrics are EMF (namespace `Stepwise`). `count` adds a metric without dimensions to the handler's
metric set; `emit` writes metrics that carry their own dimensions (task type, provider) as one EMF
document at once.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import sys
import warnings
from collections.abc import Callable, Mapping
from functools import wraps
from typing import Any, TypeVar

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.logging.formatter import LambdaPowertoolsFormatter
from aws_lambda_powertools.metrics import MetricUnit

from shared.constants import METRICS_NAMESPACE

warnings.filterwarnings("ignore", message="No application metrics to publish")

# --- masking ---------------------------------------------------------------------------------------
_MASKS: list[tuple[re.Pattern[str], str]] = [
    # Keys: Anthropic (sk-ant-...), OpenAI (sk-..., sk-proj-...), Standard Webhooks secrets.
    (re.compile(r"\bsk-(?:ant-)?[A-Za-z0-9_\-]{8,}"), "[redacted-key]"),
    (re.compile(r"\bwhsec_[A-Za-z0-9+/=_\-]{4,}"), "[redacted-secret]"),
    (re.compile(r"(?i)\b(bearer)\s+[A-Za-z0-9\-._~+/]+=*"), r"\1 [redacted]"),
    # `password=...`, `api_key: ...`, `"secret": "..."` (also inside serialized JSON).
    (
        re.compile(
            r"""(?i)\b((?:password|passwd|pwd|api[_-]?key|apikey|secret|token|access[_-]?key)\\?["']?\s*[=:]\s*\\?["']?)"""
            r"""[^\s"'&,;\\]+"""
        ),
        r"\1[redacted]",
    ),
    (re.compile(r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,}"), "[email]"),
]
# Runs of 13 or more digits, optionally in groups separated by a space or a dash; masked when some
# 13 to 19 of them in a row pass the Luhn check (as every card number does).
_CARD = re.compile(r"(?<!\d)\d(?:[ \-]?\d){12,}(?!\d)")
# Keys whose value is a secret whatever it looks like.
_SECRET_KEYS = re.compile(r"(?i)(password|passwd|secret|api[_-]?key|apikey|authorization|token|credential)")
MAX_LOGGED_TEXT = 500  # longer strings are logged as their length and hash
_EXCEPTION_KEYS = frozenset({"exception", "stack_trace"})
_MAX_EXCEPTION_TEXT = 8000


def _luhn(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _card(match: re.Match[str]) -> str:
    digits = re.sub(r"\D", "", match.group(0))
    for size in range(13, min(19, len(digits)) + 1):
        if any(_luhn(digits[i : i + size]) for i in range(len(digits) - size + 1)):
            return "[card]"
    return match.group(0)


def redact(text: str) -> str:
    """`text` with keys, secrets, tokens, credentials, e-mail addresses and card numbers masked."""
    for pattern, replacement in _MASKS:
        text = pattern.sub(replacement, text)
    return _CARD.sub(_card, text)


def fingerprint(text: str | bytes | None) -> dict[str, Any]:
    """What a log line may say about a prompt, a task's context or a file: its length and hash."""
    data = (text or "").encode() if not isinstance(text, bytes) else text
    return {"chars": len(data), "sha256": hashlib.sha256(data).hexdigest()[:16]}


def mask(value: Any, key: str = "") -> Any:
    """A log record's value with every string masked (recursively) and long texts fingerprinted."""
    if isinstance(value, str):
        if key and _SECRET_KEYS.search(key) and value:
            return "[redacted]"
        if key in _EXCEPTION_KEYS:
            return redact(value[:_MAX_EXCEPTION_TEXT])
        if len(value) > MAX_LOGGED_TEXT:
            seen = fingerprint(value)
            return f"[text of {seen['chars']} chars, sha256 {seen['sha256']}]"
        return redact(value)
    if isinstance(value, Mapping):
        # Inside an exception's record every string is the exception's; elsewhere each has its key.
        return {k: mask(v, key if key in _EXCEPTION_KEYS else str(k)) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [mask(v, key) for v in value]
    if value is None or isinstance(value, bool | int | float):
        return value
    return mask(str(value), key)


class MaskingFormatter(LambdaPowertoolsFormatter):
    """The Powertools JSON formatter, with every line masked before it is written."""

    def serialize(self, log: Any) -> str:
        return super().serialize(mask(dict(log)))


class MaskingFilter(logging.Filter):
    """For plain `logging` handlers (libraries, servers): the message masked the same way."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a malformed %-format: keep the record as the library wrote it
            return True
        record.msg, record.args = redact(message if len(message) <= 4 * MAX_LOGGED_TEXT else message[:2000]), None
        return True


# The level comes from POWERTOOLS_LOG_LEVEL, else LOG_LEVEL (Powertools reads both).
logger = Logger(service="stepwise", stream=sys.stderr, logger_formatter=MaskingFormatter())
metrics = Metrics(namespace=METRICS_NAMESPACE, service="stepwise")
_tracer: Any = None


def tracer() -> Any:
    """The Powertools Tracer, built on first use: the X-Ray SDK costs ~200 ms to import, so a cold
    start pays it only when tracing is on (on AWS), and module import stays light."""
    global _tracer
    if _tracer is None:
        from aws_lambda_powertools import Tracer

        _tracer = Tracer(service="stepwise")
    return _tracer


def _tracing_enabled() -> bool:
    return os.environ.get("POWERTOOLS_TRACE_DISABLED", "false").lower() not in ("1", "true")


F = TypeVar("F", bound=Callable[..., Any])



def count(name: str, value: float = 1, unit: MetricUnit = MetricUnit.Count) -> None:
    """Record a metric without dimensions; never lets metrics break the pipeline. Nothing is kept
    while metrics are off (locally): Powertools would hold them, and print a full set on its own."""
    from aws_lambda_powertools.metrics.functions import is_metrics_disabled

    if is_metrics_disabled():
        return
    try:
        metrics.add_metric(name=name, unit=unit, value=value)
    except Exception:  # pragma: no cover - metrics are best effort
        logger.debug("metric dropped", extra={"metric": name})


def emit(values: list[tuple[str, float, MetricUnit]], **dimensions: str) -> None:
    """Write metrics that carry their own dimensions as one EMF document, now (the handler's metric
    set has one set of dimensions for all its metrics, so these cannot join it)."""
    from aws_lambda_powertools.metrics.functions import is_metrics_disabled
    from aws_lambda_powertools.metrics.provider.cloudwatch_emf.cloudwatch import AmazonCloudWatchEMFProvider

    if not values or is_metrics_disabled():
        return
    try:
        emf = AmazonCloudWatchEMFProvider(namespace=METRICS_NAMESPACE, service="stepwise")
        for name, value, unit in values:
            emf.add_metric(name=name, unit=unit, value=value)
        for dim, dim_value in dimensions.items():
            emf.add_dimension(name=dim, value=str(dim_value) or "unknown")
        print(json.dumps(emf.serialize_metric_set(), separators=(",", ":")), flush=True)
    except Exception:  # pragma: no cover - metrics are best effort
        logger.debug("metrics dropped", extra={"metrics": [v[0] for v in values]})


def correlate(build_id: str | None) -> None:
    if build_id:
        logger.set_correlation_id(build_id)
        logger.append_keys(buildId=build_id)


def lambda_handler(fn: F) -> F:
    """The same decorator order for every handler: logger context, tracing, metrics flush."""
    wrapped: Callable[..., Any] | None = None

    @wraps(fn)
    def handler(event: Any, context: Any) -> Any:
        nonlocal wrapped
        if wrapped is None:
            inner: Callable[..., Any] = metrics.log_metrics(fn)
            if _tracing_enabled():
                inner = tracer().capture_lambda_handler(capture_response=False)(inner)
            wrapped = logger.inject_lambda_context(clear_state=True)(inner)
        return wrapped(event, context)

    return handler  # type: ignore[return-value]
