"""RetryPolicy: waits honour the server and never pass the deadline."""

from __future__ import annotations

from shared.providers.retry import RetryPolicy


def test_backoff_doubles_up_to_the_cap_and_server_hints_are_capped() -> None:
    policy = RetryPolicy(base_s=1, max_backoff_s=5, max_retry_after_s=30, jitter=False)
    assert [policy.delay(n, None) for n in (1, 2, 3, 4)] == [1, 2, 4, 5]
    assert policy.delay(1, 12.0) == 12.0
    assert policy.delay(1, 3600.0) == 30


def test_jitter_stays_within_half_to_full_backoff() -> None:
    policy = RetryPolicy(base_s=2, jitter=True)
    delays = [policy.delay(2, None) for _ in range(200)]
    assert all(2.0 <= d <= 4.0 for d in delays) and len(set(delays)) > 1


def test_no_wait_past_the_deadline_or_the_attempt_budget() -> None:
    slept: list[float] = []
    now = [100.0]
    policy = RetryPolicy(max_attempts=3, base_s=1, jitter=False, sleep=slept.append, clock=lambda: now[0])
    assert policy.wait_before_retry(1, None, deadline=110.0) is True
    assert policy.wait_before_retry(1, 20.0, deadline=110.0) is False  # would end after the deadline
    assert policy.wait_before_retry(3, None, deadline=1e9) is False  # attempts used up
    assert slept == [1]
