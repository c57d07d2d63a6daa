"""When to try again: the one backoff formula and the one `Retry-After` parser.

Every retry in Stepwise waits `exponential_backoff_s`: a vendor call within its deadline (equal
jitter), a failed task attempt re-sent to the queue (±20 %), a webhook delivery (full jitter, with
the receiver's `Retry-After` as a floor). Pure: no I/O, no clock unless one is passed.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Mapping
from datetime import UTC
from email.utils import parsedate_to_datetime

FULL_JITTER = (0.0, 1.0)


def exponential_backoff_s(
    attempt: int,
    *,
    base: float,
    cap: float,
    jitter: tuple[float, float] = FULL_JITTER,
    rng: Callable[[], float] = random.random,
) -> float:
    """Seconds to wait after failed attempt number `attempt` (1-based): `base * 2**(attempt-1)`,
    at most `cap`, times a factor drawn uniformly from `jitter` (`(1, 1)`: none), and never above
    `cap`. Full jitter `(0, 1)` spreads many clients' retries instead of sending them in waves."""
    exponent = min(max(attempt, 1) - 1, 62)  # bound the exponent: 2**huge overflows float maths
    ceiling = min(max(cap, 0.0), max(base, 0.0) * (2.0**exponent))
    low, high = jitter
    factor = low + (high - low) * max(0.0, min(1.0, rng())) if high != low else low
    return min(max(cap, 0.0), ceiling * factor)


def parse_retry_after(headers: Mapping[str, str] | None, *, now: float | None = None) -> float | None:
    """Seconds a server asks us to wait: `retry-after-ms`, else `Retry-After` as seconds or an HTTP
    date (`now` is the epoch time it is measured from; the wall clock unless given). A date in the
    past or a negative number gives 0; an absent or unreadable header gives None."""
    if not headers:
        return None
    raw_ms = headers.get("retry-after-ms")
    if raw_ms:
        seconds = _number(raw_ms)
        if seconds is not None:
            return max(0.0, seconds / 1000)
    raw = (headers.get("retry-after") or "").strip()
    if not raw:
        return None
    seconds = _number(raw)
    if seconds is not None:
        return max(0.0, seconds)
    try:
        when = parsedate_to_datetime(raw)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # RFC 9110 dates are GMT; be lenient about a missing zone
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def _number(raw: str) -> float | None:
    try:
        value = float(raw)
    except ValueError:
        return None
    return value if math.isfinite(value) else None
