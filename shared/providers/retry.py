"""Retry policy shared by the vendor providers: exponential backoff that honours `Retry-After` and
never sleeps past the call's deadline.

Why our own loop rather than the SDKs' built-in retries: the SDK does not know the task's deadline,
so its backoff can outlive the Lambda; and the plan stream must not be retried once tasks have been
handed to the caller. The SDK clients are therefore built with `max_retries=0`.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from shared.backoff import exponential_backoff_s
from shared.providers.base import ProviderError

RETRYABLE_STATUS = frozenset({408, 409, 429, 500, 502, 503, 504, 529})


class AttemptFailed(Exception):
    """One attempt of a vendor call failed. `error` is what the caller sees if it is not retried
    (its `retryable` tells the task executor whether a later attempt may succeed); `retry` says
    whether to try again within this call; `retry_after` is the server's hint in seconds."""

    def __init__(self, error: ProviderError, *, retry: bool, retry_after: float | None = None) -> None:
        super().__init__(str(error))
        self.error = error
        self.retry = retry
        self.retry_after = retry_after


@dataclass
class RetryPolicy:
    """`max_attempts` counts the first try. Delays: `base_s * 2**(n-1)` capped at `max_backoff_s`,
    jittered to between half and all of it (`shared.backoff`), or the server's Retry-After when it
    sends one (capped at `max_retry_after_s`).
    `sleep` and `clock` are injectable so tests run instantly and deterministically."""

    max_attempts: int = 4
    base_s: float = 1.0
    max_backoff_s: float = 20.0
    max_retry_after_s: float = 60.0
    jitter: bool = True
    sleep: Callable[[float], None] = time.sleep
    clock: Callable[[], float] = time.monotonic
    rng: random.Random = field(default_factory=random.Random)

    def delay(self, attempt: int, retry_after: float | None) -> float:
        """Seconds to wait after failed attempt number `attempt` (1-based)."""
        if retry_after is not None:
            return min(max(0.0, retry_after), self.max_retry_after_s)
        jitter = (0.5, 1.0) if self.jitter else (1.0, 1.0)
        return exponential_backoff_s(attempt, base=self.base_s, cap=self.max_backoff_s, jitter=jitter, rng=self.rng.random)

    def wait_before_retry(self, attempt: int, retry_after: float | None, deadline: float) -> bool:
        """Sleep before the next attempt; False (without sleeping) when no attempt or time is left."""
        if attempt >= self.max_attempts:
            return False
        pause = self.delay(attempt, retry_after)
        # Leave the next attempt at least a little time to do something useful.
        if self.clock() + pause >= deadline - 0.05:
            return False
        if pause > 0:
            self.sleep(pause)
        return True

