"""How attempts run side by side in one process: the provider calls' threads and their time limit,
the slots an invocation's memory allows, and the gate that lets claims in progress commit first."""

from __future__ import annotations

import contextlib
import contextvars
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, TypeVar

from shared.providers.base import ProviderTimeout

T = TypeVar("T")

# One thread per provider call in flight (made as needed): handed tasks run side by side, and a call
# waiting for a free thread would spend its own time limit waiting.
pool = ThreadPoolExecutor(max_workers=256, thread_name_prefix="provider")


def call_within(budget_s: float, cancel: threading.Event, fn: Callable[..., T], *args: Any) -> T:
    """`fn(*args)` in a thread of the pool, waited for at most `budget_s` seconds; past that, `cancel`
    is set and ProviderTimeout raised."""
    # The call's thread carries the invocation's context, as a Lambda's threads do.
    future = pool.submit(contextvars.copy_context().run, fn, *args)
    try:
        return future.result(timeout=budget_s)
    except FutureTimeout:
        cancel.set()  # abandon the call; a well-behaved provider stops at once
        raise ProviderTimeout(f"task did not finish within {budget_s:.1f}s") from None


class ClaimsFirst:
    """Where one process runs many task consumers (the local runtime), a consumer that holds its
    claim lets the claims in progress beside it commit before it starts its work: starting a ready
    task comes before advancing a started one. With one consumer per process (Lambda) nobody
    else is ever claiming and nothing waits."""

    def __init__(self, max_wait_s: float = 0.05) -> None:
        self.max_wait_s = max_wait_s
        self._cond = threading.Condition()
        self._claiming = 0

    @contextlib.contextmanager
    def claiming(self) -> Iterator[None]:
        with self._cond:
            self._claiming += 1
        try:
            yield
        finally:
            with self._cond:
                self._claiming -= 1
                if not self._claiming:
                    self._cond.notify_all()

    def wait(self) -> None:
        with self._cond:
            self._cond.wait_for(lambda: self._claiming == 0, timeout=self.max_wait_s)


claims_first = ClaimsFirst()


class Slots:
    """How many more tasks an invocation may run beside those it runs: its memory's bound
    (`limits.concurrent_tasks`). The task that brought the message holds one slot."""

    def __init__(self, total: int) -> None:
        self._free = max(0, total - 1)
        self._lock = threading.Lock()

    def take(self, n: int) -> int:
        with self._lock:
            k = max(0, min(n, self._free))
            self._free -= k
            return k

    def give(self, n: int) -> None:
        with self._lock:
            self._free += n


def start_thread(target: Callable[..., None], *args: Any, name: str) -> threading.Thread:
    """A thread of this invocation (it carries the invocation's context, as a Lambda's threads do)."""
    thread = threading.Thread(target=contextvars.copy_context().run, args=(target, *args), name=name, daemon=True)
    thread.start()
    return thread
