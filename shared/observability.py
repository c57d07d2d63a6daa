"""The one place Logger, Tracer and Metrics are created; every handler wraps itself the same way.

Logs carry `buildId` as the correlation id. Secrets never reach a log line: settings hide them
from repr, and `redact` masks anything that looks like a key or signing secret.
"""

from __future__ import annotations

import os
import re
import sys
import warnings
from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit

from shared.constants import METRICS_NAMESPACE

warnings.filterwarnings("ignore", message="No application metrics to publish")

logger = Logger(service="stepwise", stream=sys.stderr)
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

_SECRET = re.compile(r"(whsec_[A-Za-z0-9+/=]{8,}|sk-[A-Za-z0-9_\-]{8,}|sk-ant-[A-Za-z0-9_\-]{8,})")


def redact(text: str) -> str:
    return _SECRET.sub("[redacted]", text)


def count(name: str, value: float = 1, unit: MetricUnit = MetricUnit.Count) -> None:
    """Record a metric; never lets metrics break the pipeline."""
    try:
        metrics.add_metric(name=name, unit=unit, value=value)
    except Exception:  # pragma: no cover - metrics are best effort
        logger.debug("metric dropped", extra={"metric": name})


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
