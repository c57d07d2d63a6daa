"""Webhook delivery against a real HTTP server on 127.0.0.1 (docs/webhooks.md), plus its pure helpers.

The receiver is pytest-httpserver bound to 127.0.0.1; loopback is allow-listed the way a local
deployment would do it with WEBHOOK_ALLOWED_HOSTS.
"""

from __future__ import annotations

import datetime as dt
import json
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from pytest_httpserver import HTTPServer
from standardwebhooks import Webhook
from werkzeug import Request, Response

from shared.signing import generate_secret
from shared.webhooks.delivery import (
    DEFAULT_BURST,
    DEFAULT_RATE_PER_SECOND,
    MAX_RETRY_AFTER_S,
    DeliveryOutcome,
    EndpointRateLimiter,
    deliver,
    delivery_delay_s,
    endpoint_key,
)
from tests.webhook_receiver import verify_and_parse

EVENT_ID = "evt_01JDELIVERYTEST0000000000"


@dataclass(frozen=True)
class FakeSettings:
    allowed_hosts: frozenset[str]


LOOPBACK_OK = FakeSettings(frozenset({"127.0.0.1", "localhost"}))


def fake_resolver(table: dict[str, str]) -> Callable[..., Sequence[tuple[Any, ...]]]:
    def resolve(host: str, port: int, *_: Any, **__: Any) -> list[tuple[Any, ...]]:
        if host not in table:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (table[host], port))]

    return resolve


def no_dns(*_: Any, **__: Any) -> Any:
    raise AssertionError("must not resolve")


@pytest.fixture
def secret() -> str:
    return generate_secret()


@pytest.fixture
def body() -> bytes:
    return json.dumps(
        {
            "id": EVENT_ID,
            "type": "build_cancelled",
            "buildId": "bld_1",
            "seq": 7,
            "timestamp": 1_700_000_000_000,
            "data": {"reason": "user"},
        }
    ).encode()


# --- outcomes ------------------------------------------------------------------------------------


def test_2xx_is_delivered_and_verifies(httpserver_ipv4: HTTPServer, secret: str, body: bytes) -> None:
    httpserver_ipv4.expect_oneshot_request("/hook", method="POST").respond_with_data("ok", status=204)
    url = httpserver_ipv4.url_for("/hook")

    result = deliver(body, EVENT_ID, url, [secret], LOOPBACK_OK, resolver=no_dns)

    assert result.outcome is DeliveryOutcome.delivered
    assert result.status_code == 204
    (request, _), *_ = httpserver_ipv4.log
    assert request.get_data() == body
    headers = dict(request.headers)
    assert Webhook(secret).verify(request.get_data(), headers)["id"] == EVENT_ID
    assert verify_and_parse(request.get_data(), headers, secret).seq == 7
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["X-Webhook-Signature"]
    httpserver_ipv4.check_assertions()


def test_500_is_retry(httpserver_ipv4: HTTPServer, secret: str, body: bytes) -> None:
    httpserver_ipv4.expect_request("/hook").respond_with_data("boom", status=500)
    result = deliver(body, EVENT_ID, httpserver_ipv4.url_for("/hook"), [secret], LOOPBACK_OK)
    assert (result.outcome, result.status_code, result.retry_after_s) == (DeliveryOutcome.retry, 500, None)


def test_429_with_retry_after_seconds(httpserver_ipv4: HTTPServer, secret: str, body: bytes) -> None:
    httpserver_ipv4.expect_request("/hook").respond_with_data("", status=429, headers={"Retry-After": "120"})
    result = deliver(body, EVENT_ID, httpserver_ipv4.url_for("/hook"), [secret], LOOPBACK_OK)
    assert result.outcome is DeliveryOutcome.retry
    assert result.status_code == 429
    assert result.retry_after_s == 120


def test_429_with_retry_after_http_date(httpserver_ipv4: HTTPServer, secret: str, body: bytes) -> None:
    when = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=90)
    header = when.strftime("%a, %d %b %Y %H:%M:%S GMT")
    httpserver_ipv4.expect_request("/hook").respond_with_data("", status=429, headers={"Retry-After": header})
    result = deliver(body, EVENT_ID, httpserver_ipv4.url_for("/hook"), [secret], LOOPBACK_OK)
    assert result.outcome is DeliveryOutcome.retry
    assert result.retry_after_s is not None and 30 < result.retry_after_s <= 91


def test_410_is_gone(httpserver_ipv4: HTTPServer, secret: str, body: bytes) -> None:
    httpserver_ipv4.expect_request("/hook").respond_with_data("", status=410)
    result = deliver(body, EVENT_ID, httpserver_ipv4.url_for("/hook"), [secret], LOOPBACK_OK)
    assert (result.outcome, result.status_code) == (DeliveryOutcome.gone, 410)


@pytest.mark.parametrize("status", [400, 401, 404, 422])
def test_other_4xx_is_retry(httpserver_ipv4: HTTPServer, secret: str, body: bytes, status: int) -> None:
    httpserver_ipv4.expect_request("/hook").respond_with_data("", status=status)
    result = deliver(body, EVENT_ID, httpserver_ipv4.url_for("/hook"), [secret], LOOPBACK_OK)
    assert (result.outcome, result.status_code) == (DeliveryOutcome.retry, status)


def test_redirect_is_retry_and_not_followed(httpserver_ipv4: HTTPServer, secret: str, body: bytes) -> None:
    target = httpserver_ipv4.url_for("/elsewhere")
    httpserver_ipv4.expect_request("/hook").respond_with_data("", status=302, headers={"Location": target})
    httpserver_ipv4.expect_request("/elsewhere").respond_with_data("should not be reached")

    result = deliver(body, EVENT_ID, httpserver_ipv4.url_for("/hook"), [secret], LOOPBACK_OK)

    assert (result.outcome, result.status_code) == (DeliveryOutcome.retry, 302)
    assert "redirect" in (result.reason or "")
    assert [req.path for req, _ in httpserver_ipv4.log] == ["/hook"]


def test_redirect_not_followed_even_by_a_client_that_would(
    httpserver_ipv4: HTTPServer, secret: str, body: bytes
) -> None:
    httpserver_ipv4.expect_request("/hook").respond_with_data(
        "", status=307, headers={"Location": httpserver_ipv4.url_for("/elsewhere")}
    )
    with httpx.Client(follow_redirects=True, trust_env=False) as client:
        url = httpserver_ipv4.url_for("/hook")
        result = deliver(body, EVENT_ID, url, [secret], LOOPBACK_OK, client=client)
    assert result.outcome is DeliveryOutcome.retry
    assert [req.path for req, _ in httpserver_ipv4.log] == ["/hook"]


def test_slow_receiver_times_out_as_retry(httpserver_ipv4: HTTPServer, secret: str, body: bytes) -> None:
    release, finished = threading.Event(), threading.Event()

    def slow(_: Request) -> Response:
        release.wait(10)  # answers only once the test lets it: well after the 0.3 s the sender waits
        finished.set()
        return Response("late", status=200)

    httpserver_ipv4.expect_request("/slow").respond_with_handler(slow)
    result = deliver(body, EVENT_ID, httpserver_ipv4.url_for("/slow"), [secret], LOOPBACK_OK, timeout_s=0.3)
    answered_before_the_sender_gave_up = finished.is_set()
    release.set()
    finished.wait(5)  # the test server is single-threaded: let it finish before the next test

    assert result.outcome is DeliveryOutcome.retry
    assert result.status_code is None
    assert "timed out" in (result.reason or "")
    assert not answered_before_the_sender_gave_up


def test_connection_refused_is_retry(secret: str, body: bytes) -> None:
    with socket.socket() as s:  # a port that was free a moment ago: nothing listens there now
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = deliver(body, EVENT_ID, f"http://127.0.0.1:{port}/hook", [secret], LOOPBACK_OK)
    assert result.outcome is DeliveryOutcome.retry
    assert result.status_code is None


def test_connects_to_the_resolved_ip_with_the_original_host_header(
    httpserver_ipv4: HTTPServer, secret: str, body: bytes
) -> None:
    httpserver_ipv4.expect_request("/hook").respond_with_data("ok")
    port = httpserver_ipv4.port
    settings = FakeSettings(frozenset({"hooks.example.test"}))
    resolver = fake_resolver({"hooks.example.test": "127.0.0.1"})

    url = f"http://hooks.example.test:{port}/hook"
    result = deliver(body, EVENT_ID, url, [secret], settings, resolver=resolver)

    assert result.outcome is DeliveryOutcome.delivered
    (request, _), *_ = httpserver_ipv4.log
    assert request.headers["Host"] == f"hooks.example.test:{port}"
    Webhook(secret).verify(request.get_data(), dict(request.headers))


def test_ssrf_refused_without_any_request(httpserver_ipv4: HTTPServer, secret: str, body: bytes) -> None:
    httpserver_ipv4.expect_request("/hook").respond_with_data("ok")
    resolver = fake_resolver({"hooks.example.test": "127.0.0.1"})
    url = f"https://hooks.example.test:{httpserver_ipv4.port}/hook"

    result = deliver(body, EVENT_ID, url, [secret], FakeSettings(frozenset()), resolver=resolver)

    assert result.outcome is DeliveryOutcome.refused
    assert "loopback" in (result.reason or "")
    assert httpserver_ipv4.log == []


def test_unresolvable_host_is_retry_not_refused(secret: str, body: bytes) -> None:
    url = "https://gone.example.test/x"
    result = deliver(body, EVENT_ID, url, [secret], LOOPBACK_OK, resolver=fake_resolver({}))
    assert result.outcome is DeliveryOutcome.retry


def test_missing_secret_is_a_configuration_error(body: bytes) -> None:
    with pytest.raises(ValueError, match="secret"):
        deliver(body, EVENT_ID, "https://example.com/", [], LOOPBACK_OK, resolver=no_dns)


def test_https_pins_ip_and_sets_sni_for_the_real_name(secret: str, body: bytes) -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200)

    resolver = fake_resolver({"hooks.example.com": "93.184.216.34"})
    with httpx.Client(transport=httpx.MockTransport(handler)) as client:
        url = "https://hooks.example.com/in?t=1"
        result = deliver(
            body, EVENT_ID, url, [secret], FakeSettings(frozenset()), client=client, resolver=resolver
        )
    assert result.outcome is DeliveryOutcome.delivered
    (request,) = seen
    assert request.url.host == "93.184.216.34"
    assert request.url.raw_path == b"/in?t=1"
    assert request.headers["Host"] == "hooks.example.com"
    assert request.extensions["sni_hostname"] == "hooks.example.com"
    assert request.headers["Connection"] == "close"


# --- real TLS: the certificate is verified against the name while connecting to the IP ------------


def _self_signed(tmp: Path, name: str) -> tuple[Path, Path]:
    pytest.importorskip("cryptography")
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp / "cert.pem", tmp / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert_path, key_path


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[tuple[HTTPServer, Path]]:
    cert, key = _self_signed(tmp_path, "hooks.example.test")
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(cert, key)
    server = HTTPServer(host="127.0.0.1", port=0, ssl_context=server_ctx)
    server.start()
    try:
        yield server, cert
    finally:
        server.clear()
        server.stop()


def test_tls_verifies_the_real_host_name(
    tls_server: tuple[HTTPServer, Path], secret: str, body: bytes
) -> None:
    server, cert = tls_server
    server.expect_request("/hook").respond_with_data("ok")
    resolver = fake_resolver({"hooks.example.test": "127.0.0.1", "other.example.test": "127.0.0.1"})
    settings = FakeSettings(frozenset({"hooks.example.test", "other.example.test"}))
    trust = ssl.create_default_context(cafile=str(cert))

    with httpx.Client(verify=trust, trust_env=False) as client:
        good_url = f"https://hooks.example.test:{server.port}/hook"
        ok = deliver(body, EVENT_ID, good_url, [secret], settings, client=client, resolver=resolver)
        wrong_url = f"https://other.example.test:{server.port}/hook"
        wrong_name = deliver(body, EVENT_ID, wrong_url, [secret], settings, client=client, resolver=resolver)

    assert ok.outcome is DeliveryOutcome.delivered
    assert wrong_name.outcome is DeliveryOutcome.retry  # certificate is not valid for that name
    assert len(server.log) == 1


# --- Retry-After and backoff ---------------------------------------------------------------------


def test_backoff_is_exponential_with_full_jitter_and_capped() -> None:
    assert delivery_delay_s(1, 2, 3600, None, rng=lambda: 1.0) == 2
    assert delivery_delay_s(4, 2, 3600, None, rng=lambda: 1.0) == 16
    assert delivery_delay_s(4, 2, 3600, None, rng=lambda: 0.5) == 8
    assert delivery_delay_s(4, 2, 3600, None, rng=lambda: 0.0) == 0
    assert delivery_delay_s(50, 2, 3600, None, rng=lambda: 1.0) == 3600
    assert delivery_delay_s(10_000, 2, 3600, None, rng=lambda: 1.0) == 3600  # no overflow
    assert delivery_delay_s(0, 2, 3600, None, rng=lambda: 1.0) == 2


def test_backoff_never_below_retry_after_which_may_exceed_cap_up_to_a_limit() -> None:
    assert delivery_delay_s(1, 2, 60, 30, rng=lambda: 0.0) == 30
    assert delivery_delay_s(1, 2, 60, 600, rng=lambda: 1.0) == 600
    assert delivery_delay_s(1, 2, 60, 10**9, rng=lambda: 1.0) == MAX_RETRY_AFTER_S
    assert delivery_delay_s(1, 2, 60, float("nan"), rng=lambda: 0.5) == 1


def test_backoff_jitter_stays_in_range() -> None:
    import random

    rng = random.Random(7)
    for attempt in range(1, 12):
        delay = delivery_delay_s(attempt, 1.5, 300, None, rng=rng.random)
        assert 0 <= delay <= min(300, 1.5 * 2 ** (attempt - 1))


# --- rate limiter --------------------------------------------------------------------------------


def test_endpoint_key_ignores_path_and_query_and_normalises() -> None:
    assert endpoint_key("https://Hooks.Example.com/a?token=x") == "https://hooks.example.com:443"
    assert endpoint_key("http://hooks.example.com:8080/b") == "http://hooks.example.com:8080"
    assert endpoint_key("https://[::1]:9/") == "https://[::1]:9"


def test_rate_bound_holds_over_many_acquires() -> None:
    """With a virtual clock: N acquires at rate r with burst b need at least (N - b) / r seconds."""
    clock = [0.0]

    def sleep(seconds: float) -> None:
        clock[0] += seconds

    limiter = EndpointRateLimiter(rate_per_s=20, burst=5, clock=lambda: clock[0], sleep=sleep)
    n = 200
    assert all(limiter.acquire("https://a:443", timeout=10) for _ in range(n))
    assert clock[0] >= (n - 5) / 20 - 1e-6
    assert clock[0] <= (n - 5) / 20 + 1.0  # and it does not wait much longer than needed


def test_rate_limit_without_waiting_counts_tokens() -> None:
    limiter = EndpointRateLimiter(rate_per_s=20, burst=20, clock=lambda: 0.0, sleep=lambda _: None)
    granted = sum(limiter.acquire("https://a:443", timeout=0) for _ in range(100))
    assert granted == 20


def test_one_builds_burst_goes_out_at_once_and_a_flood_still_gets_20_a_second() -> None:
    from shared.logic import webhooks

    assert (webhooks._limiter.rate, webhooks._limiter.capacity) == (DEFAULT_RATE_PER_SECOND, DEFAULT_BURST)
    clock = [0.0]
    waited: list[float] = []

    def sleep(seconds: float) -> None:
        waited.append(seconds)
        clock[0] += seconds

    limiter = EndpointRateLimiter(DEFAULT_RATE_PER_SECOND, DEFAULT_BURST, clock=lambda: clock[0], sleep=sleep)
    for _ in range(93):  # a 30-task build's events, recorded at ~50 a second: none waits
        assert limiter.acquire("http://127.0.0.1:8080", timeout=1.0)
        clock[0] += 0.02
    assert waited == []
    clock[0] += 60  # idle again; then a flood of 400 at once is held to 20 a second after the burst
    assert all(limiter.acquire("http://127.0.0.1:8080", timeout=60) for _ in range(400))
    assert sum(waited) >= (400 - DEFAULT_BURST) / DEFAULT_RATE_PER_SECOND - 1e-6


def test_rate_limit_real_time_bound() -> None:
    limiter = EndpointRateLimiter(rate_per_s=50, burst=5)
    started = time.monotonic()
    granted = 0
    while time.monotonic() - started < 0.3:
        granted += limiter.acquire("https://a:443", timeout=0)
    elapsed = time.monotonic() - started
    assert granted <= 5 + 50 * elapsed + 2  # burst + rate * time (generous)
    assert granted >= 5


def test_two_endpoints_do_not_block_each_other() -> None:
    limiter = EndpointRateLimiter(rate_per_s=1, burst=3)
    assert all(limiter.acquire("https://slow:443", timeout=0) for _ in range(3))
    waiter_started = threading.Event()
    waiter_done = threading.Event()

    def wait_for_slow() -> None:
        waiter_started.set()
        limiter.acquire("https://slow:443", timeout=5)  # sleeps ~1 s for its reservation
        waiter_done.set()

    thread = threading.Thread(target=wait_for_slow, daemon=True)
    thread.start()
    waiter_started.wait(2)
    time.sleep(0.05)
    # While the other thread sleeps on "slow", "fast" gets its token at once, repeatedly.
    fast_granted = sum(limiter.acquire("https://fast:443", timeout=0) for _ in range(3))
    assert fast_granted == 3
    assert not waiter_done.is_set()
    assert not limiter.acquire("https://slow:443", timeout=0)  # "slow" itself is exhausted
    thread.join(5)
    assert waiter_done.is_set()


def test_concurrent_acquires_respect_the_bucket() -> None:
    limiter = EndpointRateLimiter(rate_per_s=1, burst=10)
    results: list[bool] = []
    lock = threading.Lock()

    def worker() -> None:
        got = limiter.acquire("https://a:443", timeout=0)
        with lock:
            results.append(got)

    threads = [threading.Thread(target=worker) for _ in range(40)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(5)
    assert len(results) == 40
    assert 10 <= sum(results) <= 12  # burst, plus at most a refill or two while threads start


def test_limiter_is_used_by_deliver(httpserver_ipv4: HTTPServer, secret: str, body: bytes) -> None:
    httpserver_ipv4.expect_request("/hook").respond_with_data("ok")
    limiter = EndpointRateLimiter(rate_per_s=0.01, burst=1)
    url = httpserver_ipv4.url_for("/hook")
    first = deliver(body, EVENT_ID, url, [secret], LOOPBACK_OK, rate_limiter=limiter, rate_wait_s=0)
    second = deliver(body, EVENT_ID, url, [secret], LOOPBACK_OK, rate_limiter=limiter, rate_wait_s=0)
    assert first.outcome is DeliveryOutcome.delivered
    assert second.outcome is DeliveryOutcome.retry
    assert "rate limited" in (second.reason or "")
    assert len(httpserver_ipv4.log) == 1
