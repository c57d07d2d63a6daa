"""The fast path from a finished task to its dependents: one commit, no queue hop.

When a task attempt succeeds, its consumer takes the dispatcher's step itself. It takes the build's
dispatch state (as this process's last step of the build committed it, when there was one, else
read), decides with the same pure scheduler (`dispatch_state.decide`), and commits in ONE transaction:

- the task's completion: `task_completed` and the task item (`completed`, only if this attempt
  still holds it), with `released` — what this step decided to start — recorded on the item;
- the new dispatch state, only if its version is still the one read, the build still executes and
  nothing halted it;
- when the step releases dependents and the invocation has time for a whole attempt, their claims
  (up to HANDOFF_LIMIT): `task_started` and each item (`in_progress`, attempt N), with `handedTo`
  on the finished task.

The consumer then runs those dependents itself, side by side (the first in its own thread); any
other released task goes to the tasks queue. So a dependent starts in the commit that completes its
last parent. Anything unusual — a race it keeps
losing, a halt, the budget or the time limit, the build's last task — is left to the dispatcher:
the completion commits alone and a message goes to the task-finished queue, as before.

Nothing is lost if the consumer dies: the finished task's queue message stays in flight (a renewed
lease) until the invocation returns, and its redelivery, within one lease of a crash, finds the task
completed with `released` recorded, re-sends what nobody claimed, and once the dependents it was
running are surely dead runs those same attempts again itself, or settles them if the build was
halted (`attempts.claim.replay`). Temporal's eager activity dispatch is the same idea.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from shared.dal.table import Update
from shared.errors import StateConflict
from shared.logic.readiness import dispatch_state
from shared.logic.services import Services
from shared.models.build import BuildStatus
from shared.models.events import EventType
from shared.models.plan import TERMINAL_TASK_STATUSES, Task, TaskStatus
from shared.models.records import BuildRecord
from shared.observability import count

_TRIES = 3  # lost races on the dispatch state before leaving the step to the dispatcher
# At most this many released tasks start in one completing commit and run in its invocation, side
# by side (an LLM call waits on the network, so one invocation runs several); more go to the queue.
# The invocation's memory bounds them too: all it runs at once stay within `limits.concurrent_tasks`
# of the function's memory (8 for the task function's 1024 MB), counted by `attempts.concurrency.Slots`.
HANDOFF_LIMIT = 8


@dataclass
class Handed:
    """A dependent this consumer claimed in the completing commit and now runs itself."""

    task: Task
    attempt: int
    started: int


def claim_update(attempt: int, started: int) -> Update:
    """A task item's claim for `attempt`: only a newer attempt of a planned task that is not settled
    (a task failed for good stays failed until a retry-task re-opens it as `pending`)."""
    return (
        Update()
        .set(status=TaskStatus.in_progress.value, attempt=attempt, startedAt=started, updatedAt=started)
        .when("attribute_exists({status})")
        .when("attribute_not_exists({attempt}) OR {attempt} < :a", a=attempt)
        .when_not_in("status", TERMINAL_TASK_STATUSES)
    )


def _running(build: BuildRecord) -> bool:
    """The build executes, or still plans with tasks started as its plan streamed (the same test
    as `tx_still_running`), and nothing halted it."""
    streaming = build.status == BuildStatus.planning and build.streamedTasks is not None
    return (build.status == BuildStatus.executing or streaming) and not build.haltedBy


def started_data(task: Task, attempt: int) -> dict[str, Any]:
    return {"taskId": task.id, "taskName": task.name, "description": task.description, "attempt": attempt}


def complete(
    svc: Services,
    build_id: str,
    task_id: str,
    attempt: int,
    cost: float,
    completed: dict[str, Any],
    completion: Callable[[], Update],
    *,
    run_here: int,
    with_commit: list[dict[str, Any]] | None = None,
) -> list[Handed] | None:
    """Commit a successful attempt with the dispatcher's step; return the dependents it claimed for
    this consumer to run (at most `run_here`, and HANDOFF_LIMIT), in the scheduler's order. None:
    not taken, use the queue path.

    `completion()` builds the finished task's item update (with its condition); `with_commit`: more
    transaction entries, without conditions, that commit with it. Raises
    StateConflict when that condition fails: the attempt was settled elsewhere.
    """
    op = dispatch_state.finished_op(task_id, "completed", attempt, cost)
    with svc.events.serial(build_id):  # this process's writers of the build take turns: no lost races
        # The build as this process's last step of it left it, when there was one: no read. If
        # another step came between, the version condition fails and it is read and decided again.
        held = dispatch_state.committed(build_id)
        for _ in range(_TRIES + (held is not None)):
            build, from_held, held = held or svc.builds.get(build_id), held is not None, None
            if not build or not _running(build):
                return None
            cur = dispatch_state.dispatch_state_of(svc, build)
            decision = dispatch_state.decide(cur, op)
            if decision.duplicate or decision.all_terminal or decision.skipped or cur.state.halted:
                if from_held:
                    continue  # decide that on the stored state, not on what this process last saw
                return None  # the dispatcher's to handle: nothing new, the end, or a halt
            sends = decision.sends
            tasks = dispatch_state.plan(svc, build)[1]
            nxt = [(t, a) for t, a in sends if t in tasks][: max(0, min(run_here, HANDOFF_LIMIT))]
            started = svc.clock.now_ms()
            done = completion().set(released=[[t, a] for t, a in sends], handedTo=[[t, a] for t, a in nxt] or None)
            entries: list[tuple[EventType, Any]] = [(EventType.task_completed, completed)]
            also = [
                svc.tasks.tx_update(build_id, task_id, done),
                svc.builds.tx_still_running(build_id, dispatch_state.state_update(cur)),
            ]
            for t, a in nxt:
                entries.append((EventType.task_started, started_data(tasks[t], a)))
                also.append(svc.tasks.tx_update(build_id, t, claim_update(a, started)))
            also += with_commit or []  # what else the completion commits (the files it indexes)
            try:
                svc.events.record_many(build_id, entries, also=also)
            except StateConflict as exc:
                dispatch_state.forget_commit(build_id)
                if 0 in ((exc.details or {}).get("failed") or []):
                    raise  # the finished task's own condition: its attempt was settled elsewhere
                continue  # the dispatch state moved on: read it again
            dispatch_state.remember_commit(cur)
            break
        else:
            count("task.handoff_contended")
            return None
    dispatch_state.send_tasks(svc, build_id, [s for s in sends if s not in nxt], tasks)
    count("task.handoff")
    return [Handed(tasks[t], a, started) for t, a in nxt]
