"""The one backoff formula and the one Retry-After parser every retry in Stepwise uses."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.backoff import FULL_JITTER, exponential_backoff_s, parse_retry_after

NOW = 1445412480.0  # 10 s before "Wed, 21 Oct 2015 07:28:10 GMT"


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"retry-after": "12"}, 12.0),
        ({"retry-after": " 30 "}, 30.0),
        ({"retry-after": "0.5"}, 0.5),
        ({"retry-after-ms": "250", "retry-after": "9"}, 0.25),
        ({"retry-after-ms": "soon", "retry-after": "9"}, 9.0),
        ({"retry-after": "Wed, 21 Oct 2015 07:28:10 GMT"}, 10.0),
        ({"retry-after": "Wed, 21 Oct 2015 07:28:10"}, 10.0),  # no zone: GMT, as RFC 9110 dates are
        ({"retry-after": "Wed, 21 Oct 2015 07:00:00 GMT"}, 0.0),  # in the past
        ({"retry-after": "-3"}, 0.0),
        ({"retry-after": "soon"}, None),
        ({"retry-after": "inf"}, None),
        ({"retry-after": "nan"}, None),
        ({"retry-after": ""}, None),
        ({}, None),
        (None, None),
    ],
)
def test_retry_after_forms(headers: dict[str, str] | None, expected: float | None) -> None:
    assert parse_retry_after(headers, now=NOW) == expected


@settings(max_examples=200, deadline=None, derandomize=True)
@given(st.text(max_size=40))
def test_retry_after_never_raises_and_is_never_negative(raw: str) -> None:
    got = parse_retry_after({"retry-after": raw}, now=NOW)
    assert got is None or got >= 0


def test_backoff_doubles_up_to_the_cap() -> None:
    none = (1.0, 1.0)
    assert [exponential_backoff_s(n, base=1, cap=5, jitter=none) for n in (1, 2, 3, 4)] == [1, 2, 4, 5]
    assert exponential_backoff_s(10_000, base=2, cap=3600, jitter=none) == 3600  # no overflow
    assert exponential_backoff_s(0, base=2, cap=3600, jitter=none) == 2
    assert exponential_backoff_s(3, base=0, cap=900, jitter=(0.8, 1.2)) == 0


@settings(max_examples=200, deadline=None, derandomize=True)
@given(
    attempt=st.integers(min_value=-3, max_value=200),
    base=st.floats(min_value=0, max_value=600),
    cap=st.floats(min_value=0, max_value=43_200),
    jitter=st.sampled_from([FULL_JITTER, (0.5, 1.0), (0.8, 1.2), (1.0, 1.0)]),
    seed=st.integers(min_value=0, max_value=2**16),
)
def test_backoff_stays_within_its_jitter_of_the_capped_exponential(
    attempt: int, base: float, cap: float, jitter: tuple[float, float], seed: int
) -> None:
    delay = exponential_backoff_s(attempt, base=base, cap=cap, jitter=jitter, rng=random.Random(seed).random)
    ceiling = min(cap, base * 2.0 ** min(max(attempt, 1) - 1, 62))
    assert 0 <= delay <= cap
    assert ceiling * jitter[0] - 1e-9 <= delay <= min(cap, ceiling * jitter[1]) + 1e-9


def test_the_jitter_is_drawn_from_the_whole_range() -> None:
    rng = random.Random(7)
    delays = [exponential_backoff_s(2, base=2, cap=20, jitter=(0.5, 1.0), rng=rng.random) for _ in range(200)]
    assert min(delays) < 2.2 and max(delays) > 3.8 and all(2.0 <= d <= 4.0 for d in delays)
