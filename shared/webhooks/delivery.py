"""One webhook delivery attempt, its classification, the retry schedule and per-endpoint rate limits.

docs/webhooks.md#delivery-retries-and-the-dead-letter-queue: any 2xx within 10 s is delivered; anything else is retried with exponential backoff and
jitter, and after the last attempt the message is dead-lettered. ``deliver`` performs exactly one
attempt and says which of those applies; the queue consumer owns attempts, delays and the DLQ.

Why the request goes to an IP rather than the URL: ``check_url`` resolves the host once and vets
every address. If the HTTP client resolved the name again, a hostile DNS server could answer with a
public address for the check and 169.254.169.254 for the connection (DNS rebinding). So we connect
to the vetted IP, send the original name in ``Host``, and for https pass it as the TLS
``sni_hostname`` request extension so the certificate is still verified against the real name.
"""

from __future__ import annotations

import functools
import logging
import math
import random
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Protocol
from urllib.parse import urlsplit

if TYPE_CHECKING:
    import httpx

from shared import limits
from shared.backoff import FULL_JITTER, exponential_backoff_s, parse_retry_after
from shared.signing import sign_headers
from shared.ssrf import (
    DEFAULT_PORTS,
    ResolvedTarget,
    Resolver,
    UnresolvableWebhookHost,
    UnsafeWebhookUrl,
    check_url,
)

logger = logging.getLogger(__name__)

DELIVERY_TIMEOUT_S = limits.WEBHOOK_DELIVERY_TIMEOUT_S
MAX_RETRY_AFTER_S = 12 * 3600.0
DEFAULT_RATE_PER_SECOND = 20.0
# Requests an idle endpoint may get at once before the rate applies: one build's burst of events
# (a 30-task build records ~90 in under two seconds) goes out as it happens instead of queueing
# behind a 20/s drip; a sustained stream still gets 20 a second.
DEFAULT_BURST = 100.0
USER_AGENT = "Stepwise-Webhooks/1"


class DeliveryOutcome(StrEnum):
    delivered = "delivered"  # 2xx within the time limit: done
    retry = "retry"  # transient or receiver-side failure: try again later
    gone = "gone"  # 410: the receiver asked us to stop; do not retry
    refused = "refused"  # the URL is unsafe (SSRF): dead-letter at once with the reason


@dataclass(frozen=True)
class DeliveryResult:
    outcome: DeliveryOutcome
    status_code: int | None = None
    retry_after_s: float | None = None
    reason: str | None = None


class _HasAllowedHosts(Protocol):
    @property
    def allowed_hosts(self) -> frozenset[str]: ...


# ---------------------------------------------------------------------------------------------------
# Retry delay


def delivery_delay_s(
    attempt: int,
    base: float,
    cap: float,
    retry_after: float | None,
    rng: Callable[[], float] = random.random,
) -> float:
    """Delay before retry number ``attempt`` (1 = the first retry).

    Full jitter (a uniform draw in ``[0, min(cap, base * 2**(attempt-1))]``, `shared.backoff`)
    spreads the retries of many builds hitting one recovering receiver instead of having them arrive
    in waves. A receiver's ``Retry-After`` is a floor — it may exceed ``cap`` because the receiver
    knows best — but it is clamped to ``MAX_RETRY_AFTER_S`` so a hostile or buggy header cannot park
    a message forever.
    """
    delay = exponential_backoff_s(attempt, base=base, cap=cap, jitter=FULL_JITTER, rng=rng)
    if retry_after is not None and math.isfinite(retry_after) and retry_after > 0:
        delay = max(delay, min(retry_after, MAX_RETRY_AFTER_S))
    return delay


# ---------------------------------------------------------------------------------------------------
# Rate limiting


def endpoint_key(url: str) -> str:
    """``scheme://host:port`` of a webhook URL, without resolving it — the rate-limit key.

    The path and query are left out (they may carry a receiver's token and must not end up in logs
    or metrics); an unparsable URL maps to one shared key, and ``deliver`` will refuse it anyway.
    """
    try:
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        host = (parts.hostname or "").rstrip(".")
        port = parts.port or DEFAULT_PORTS.get(scheme, 0)
    except ValueError:
        return "invalid://"
    shown = f"[{host}]" if ":" in host else host
    return f"{scheme}://{shown}:{port}"


class _Bucket:
    __slots__ = ("last", "lock", "tokens")

    def __init__(self, tokens: float, now: float) -> None:
        self.lock = threading.Lock()
        self.tokens = tokens
        self.last = now


class EndpointRateLimiter:
    """A token bucket per endpoint (``scheme://host:port``), default 20 requests/s (docs/webhooks.md);
    ``burst``: how many an idle endpoint may take at once (default: one second's worth).

    ``acquire`` reserves a token under the endpoint's own lock and sleeps *after* releasing it, so a
    slow endpoint never holds up another one, and waiters on one endpoint queue in reservation order
    instead of spinning. The registry lock only guards the dict lookup.
    """

    def __init__(
        self,
        rate_per_s: float = DEFAULT_RATE_PER_SECOND,
        burst: float | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        max_endpoints: int = 10_000,
    ) -> None:
        if rate_per_s <= 0:
            raise ValueError("rate_per_s must be positive")
        self.rate = float(rate_per_s)
        self.capacity = float(burst if burst is not None else rate_per_s)
        if self.capacity < 1:
            raise ValueError("burst must allow at least one request")
        self._clock = clock
        self._sleep = sleep
        self._max_endpoints = max_endpoints
        self._buckets: dict[str, _Bucket] = {}
        self._registry = threading.Lock()

    def _bucket(self, endpoint: str) -> _Bucket:
        with self._registry:
            bucket = self._buckets.get(endpoint)
            if bucket is None:
                if len(self._buckets) >= self._max_endpoints:
                    self._evict_idle()
                bucket = self._buckets[endpoint] = _Bucket(self.capacity, self._clock())
            return bucket

    def _evict_idle(self) -> None:
        # A bucket that has refilled completely holds no state worth keeping; dropping it bounds
        # memory in a long-lived worker that sees many distinct receivers.
        now = self._clock()
        full_after = self.capacity / self.rate
        for key, bucket in list(self._buckets.items()):
            if now - bucket.last >= full_after and bucket.tokens >= 0 and not bucket.lock.locked():
                del self._buckets[key]

    def acquire(self, endpoint: str, timeout: float = 0.0) -> bool:
        """Take one token for ``endpoint``, waiting up to ``timeout`` seconds; False if it can't."""
        bucket = self._bucket(endpoint)
        with bucket.lock:
            now = self._clock()
            bucket.tokens = min(self.capacity, bucket.tokens + (now - bucket.last) * self.rate)
            bucket.last = now
            if bucket.tokens >= 1:
                bucket.tokens -= 1
                return True
            wait = (1 - bucket.tokens) / self.rate
            if wait > timeout:
                return False
            bucket.tokens -= 1  # reserve: later callers see the debt and wait behind us
        self._sleep(wait)
        return True


# ---------------------------------------------------------------------------------------------------
# Delivery


def _classify(status: int, headers: httpx.Headers) -> DeliveryResult:
    if 200 <= status < 300:
        return DeliveryResult(DeliveryOutcome.delivered, status, None, f"HTTP {status}")
    if status == 410:
        return DeliveryResult(DeliveryOutcome.gone, status, None, "HTTP 410 Gone: the receiver asked to stop")
    retry_after = parse_retry_after(headers) if status in (429, 503) else None
    if 300 <= status < 400:
        # Redirects are not followed: the target could be anything, including an internal address.
        reason = f"HTTP {status} redirect (not followed; configure the final URL)"
    else:
        reason = f"HTTP {status}"
    return DeliveryResult(DeliveryOutcome.retry, status, retry_after, reason)


def deliver(
    event_json: bytes,
    event_id: str,
    url: str,
    secrets: list[str],
    settings_like: _HasAllowedHosts,
    *,
    client: httpx.Client | None = None,
    resolver: Resolver = socket.getaddrinfo,
    timeout_s: float = DELIVERY_TIMEOUT_S,
    rate_limiter: EndpointRateLimiter | None = None,
    rate_wait_s: float = 1.0,
    now: float | None = None,
) -> DeliveryResult:
    """POST one signed event to ``url`` once and classify the result.

    ``settings_like`` needs only ``allowed_hosts`` (``shared.settings.Settings`` fits). A passed
    ``client`` is used as is except that redirects are never followed; it should not read proxy
    settings from the environment (``trust_env=False``), or the pinned IP would go through a proxy
    that resolves names itself. Every request says ``Connection: close`` so a TLS connection that was
    verified for one host name is never reused for another name that shares the IP.

    Raises ``ValueError`` only for a sender misconfiguration (no or malformed secrets).
    """
    headers = sign_headers(event_json, event_id, secrets, now=now)

    try:
        target = check_url(url, settings_like.allowed_hosts, resolver=resolver)
    except UnresolvableWebhookHost as exc:
        return DeliveryResult(DeliveryOutcome.retry, None, None, exc.reason)
    except UnsafeWebhookUrl as exc:
        return DeliveryResult(DeliveryOutcome.refused, None, None, exc.reason)

    if rate_limiter is not None and not rate_limiter.acquire(target.endpoint, rate_wait_s):
        return DeliveryResult(DeliveryOutcome.retry, None, 1.0, "rate limited locally (per-endpoint limit)")

    result = _post(target, event_json, headers, client, timeout_s)
    logger.info(
        "webhook delivery %s",
        result.outcome.value,
        extra={"eventId": event_id, "endpoint": target.endpoint, "status": result.status_code},
    )
    return result


@functools.lru_cache(maxsize=1)
def tls_context() -> ssl.SSLContext:
    """The TLS context httpx would build (certifi's CA bundle, trust_env off like the client), made
    once per process: loading the CA bundle on every delivery costs more CPU than the delivery."""
    import httpx

    return httpx.create_ssl_context(trust_env=False)


def _post(
    target: ResolvedTarget,
    body: bytes,
    signed: dict[str, str],
    client: httpx.Client | None,
    timeout_s: float,
) -> DeliveryResult:
    import httpx  # imported on first delivery: it weighs a quarter of the handler's import

    headers = {**signed, "Host": target.host_header, "Connection": "close", "User-Agent": USER_AGENT}
    extensions: dict[str, object] = {}
    if target.scheme == "https" and target.host != target.ip:
        extensions["sni_hostname"] = target.host

    http = client or httpx.Client(trust_env=False, follow_redirects=False, timeout=timeout_s, verify=tls_context())
    started = time.monotonic()
    try:
        request = http.build_request(
            "POST",
            target.connect_url,
            content=body,
            headers=headers,
            timeout=httpx.Timeout(timeout_s),
            extensions=extensions,
        )
        # stream=True: we only need the status line and headers; reading an arbitrary body would
        # let a receiver stretch the attempt (and our memory) at will.
        response = http.send(request, follow_redirects=False, stream=True)
        response.close()
    except httpx.TimeoutException as exc:
        return DeliveryResult(DeliveryOutcome.retry, None, None, f"timed out ({type(exc).__name__})")
    except httpx.HTTPError as exc:
        # Only the class name: messages can echo request details we do not want in a DLQ record.
        return DeliveryResult(DeliveryOutcome.retry, None, None, f"connection failed ({type(exc).__name__})")
    except httpx.InvalidURL:
        return DeliveryResult(DeliveryOutcome.refused, None, None, "the webhook URL cannot be sent as HTTP")
    finally:
        if client is None:
            http.close()

    elapsed = time.monotonic() - started
    result = _classify(response.status_code, response.headers)
    if result.outcome is DeliveryOutcome.delivered and elapsed > timeout_s:
        # httpx timeouts are per phase; the contract's limit is on the whole exchange.
        return DeliveryResult(
            DeliveryOutcome.retry, response.status_code, None, f"answered after more than {timeout_s:g} s"
        )
    return result
