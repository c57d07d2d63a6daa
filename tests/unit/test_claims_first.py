"""ClaimsFirst: in a process running many task consumers, claims in progress go before work."""

from __future__ import annotations

import threading
import time

from shared.logic.attempts.concurrency import ClaimsFirst


def test_nobody_claiming_means_no_wait():
    gate = ClaimsFirst(max_wait_s=5.0)
    done = threading.Event()
    threading.Thread(target=lambda: (gate.wait(), done.set()), daemon=True).start()
    assert done.wait(2.0)


def test_work_waits_until_the_claims_beside_it_commit():
    gate = ClaimsFirst(max_wait_s=30.0)
    order: list[str] = []
    claiming, release = threading.Event(), threading.Event()

    def claimer() -> None:
        with gate.claiming():
            claiming.set()
            release.wait(10)
            order.append("claim committed")

    def worker() -> None:
        claiming.wait(10)
        gate.wait()
        order.append("work started")

    threads = [threading.Thread(target=claimer), threading.Thread(target=worker)]
    for t in threads:
        t.start()
    claiming.wait(10)
    time.sleep(0.05)  # the worker is waiting now; it must not start before the claim commits
    assert order == []
    release.set()
    for t in threads:
        t.join(10)
    assert order == ["claim committed", "work started"]


def test_a_claim_that_never_ends_cannot_hold_work_back():
    gate = ClaimsFirst(max_wait_s=0.05)
    with gate.claiming():
        waiter = threading.Thread(target=gate.wait)
        waiter.start()
        waiter.join(10)
        assert not waiter.is_alive()  # it went on while the claim was still open
