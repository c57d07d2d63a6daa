"""Run a task message: claim under the claims gate, then run its attempt and each dependent its
completion hands to this consumer, side by side, as many at once as the memory allows.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from shared import limits
from shared.logic.attempts.attempt import run_attempt
from shared.logic.attempts.claim import Claimed, claim
from shared.logic.attempts.concurrency import Slots, claims_first, start_thread
from shared.logic.services import Services, services
from shared.models.messages import TaskMessage


def run_task(
    msg: TaskMessage, remaining_ms: Callable[[], int], svc: Services | None = None, *, memory_mb: int | None = None
) -> None:
    """Run the attempt `msg` names (or the dead attempts its message watches), then each dependent
    its completion hands to this consumer, at most as many at once as the memory allows."""
    svc = svc or services()
    slots = Slots(limits.concurrent_tasks(memory_mb or limits.FUNCTION_MEMORY_MB["task"]))
    with claims_first.claiming():
        claimed = claim(svc, msg)
    if claimed:  # dead attempts adopted together were handed together: the memory held them then
        slots.take(len(claimed) - 1)
        _run_all(svc, claimed, remaining_ms, slots)


def _run_all(svc: Services, claims: list[Claimed], remaining_ms: Callable[[], int], slots: Slots) -> None:
    """Run attempts side by side, each with what its completion hands over: the first in this thread,
    the others in threads of this invocation. Returns once all have ended, so the message that
    brought them stays in flight (and watches them) until then; the first error is raised."""
    threads: list[threading.Thread] = []
    errors: list[BaseException] = []

    def beside(claimed: Claimed) -> None:
        try:
            _run_handed(svc, claimed, remaining_ms, slots, errors, threads)
        except BaseException as exc:  # carried to the invocation: raised below, once all have ended
            errors.append(exc)

    try:
        for claimed in claims[1:]:
            threads.append(start_thread(beside, claimed, name=f"task-{claimed.task.id}"))
        _run_handed(svc, claims[0], remaining_ms, slots, errors, threads)
    finally:
        while threads:
            threads.pop(0).join()
    if errors:
        raise errors[0]


def _run_handed(
    svc: Services,
    first: Claimed,
    remaining_ms: Callable[[], int],
    slots: Slots,
    errors: list[BaseException],
    threads: list[threading.Thread],
) -> None:
    """Run an attempt, then what its completion hands over: the first in this thread, the others
    in new threads (joined by `_run_all`). Gives back its slot when its chain ends."""

    def beside(claimed: Claimed) -> None:
        try:
            _run_handed(svc, claimed, remaining_ms, slots, errors, threads)
        except BaseException as exc:
            errors.append(exc)

    try:
        current: Claimed | None = first
        while current is not None:
            claims_first.wait()
            handed = run_attempt(svc, current, remaining_ms, slots)
            current = handed[0] if handed else None
            for claimed in handed[1:]:
                threads.append(start_thread(beside, claimed, name=f"task-{claimed.task.id}"))
    finally:
        slots.give(1)
