"""Take an attempt, or do what its state implies when the claim lost (replay): report what settled,
retry what was queued, cancel what a stopped build never started, adopt what a dead worker held."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from shared import limits
from shared.dal.table import Update, transact
from shared.errors import StateConflict
from shared.logic.attempts.build_facts import BUILD_FIELDS, kept_build, remember_build, stopped
from shared.logic.attempts.context import ReadAhead
from shared.logic.attempts.settle import cancel_unstarted, retry_or_report, settle_failure, tell_dispatcher
from shared.logic.readiness import dispatch_state, handoff
from shared.logic.services import Services
from shared.models.events import EventType
from shared.models.messages import TaskMessage
from shared.models.plan import FAILED_TASK_STATUSES, UNSTARTED_TASK_STATUSES, Task, TaskStatus, Usage
from shared.models.records import BuildRecord, TaskRecord
from shared.observability import count, logger


@dataclass
class Claimed:
    """An attempt this consumer holds: its claim committed with `task_started`."""

    msg: TaskMessage
    build: BuildRecord  # as build_facts keeps it: only what never changes is read from it
    task: Task
    started: int
    # What this invocation already holds of the build's files: what each task it completed wrote
    # (task id -> path -> content), shared by every attempt it runs, so none reads them back.
    known: dict[str, dict[str, str]] = field(default_factory=dict)
    ahead: ReadAhead | None = None  # what one read for the dependents handed with it fetched


def claim(svc: Services, msg: TaskMessage) -> list[Claimed]:
    """Take the attempt: `in_progress` and `task_started` in one commit, only while the build runs.
    If it was taken already, do what its state implies (`replay`), which may hand back dead
    attempts this message watches, to run again here.

    A message that carries its task's definition, for a build this process has seen, goes straight
    to that commit; its conditions decide what a read would have."""
    build = kept_build(msg.buildId)
    task = Task.model_validate(msg.task) if msg.task else None
    if build is None or task is None:
        fresh = svc.builds.get(msg.buildId, attributes=BUILD_FIELDS)
        # A message carrying its definition needs no read of the task: the claim's conditions decide.
        item = svc.tasks.get(msg.buildId, msg.taskId) if task is None else None
        if task is None and item is not None:
            task = item.task
        if fresh is None or task is None:
            logger.warning("task message for a missing build or task dropped", extra=msg.model_dump(exclude={"task"}))
            return []
        if stopped(fresh):
            return replay(svc, msg, task, current=item, halted=True)
        build = remember_build(fresh)
    started = svc.clock.now_ms()
    try:
        svc.events.record(
            msg.buildId,
            EventType.task_started,
            handoff.started_data(task, msg.attempt),
            also=[
                svc.tasks.tx_update(msg.buildId, task.id, handoff.claim_update(msg.attempt, started)),
                svc.builds.tx_still_running(msg.buildId),  # no task_started after a halt or the end
            ],
        )
    except StateConflict:
        fresh = svc.builds.get(msg.buildId, attributes=BUILD_FIELDS)
        if fresh is None:
            return []
        return replay(svc, msg, task, halted=stopped(fresh))  # it ended or halted: start nothing
    return [Claimed(msg, build, task, started)]


class ComeBackLater(Exception):
    """The message must come back in `after_s` seconds (its handler makes it invisible until then)."""

    def __init__(self, message: str, after_s: float) -> None:
        super().__init__(message)
        # whole seconds (what SQS takes), rounded up, plus one for the clocks of two hosts
        self.after_s = float(math.ceil(max(1.0, after_s)) + 1)


class TaskStillRunning(ComeBackLater):
    """A redelivered message whose attempt another invocation may still be running."""


def replay(
    svc: Services,
    msg: TaskMessage,
    task: Task,
    *,
    current: TaskRecord | None = None,
    handed: bool = False,
    halted: bool = False,
) -> list[Claimed]:
    """The claim lost: this attempt was already taken, or the build stopped. Do whatever the task's
    settled state implies; returns the dead attempts this message runs again itself.

    `current`: the task's item, if just read. `handed`: the attempt was claimed by the completion of
    a task whose message this is (handoff). `halted`: the build ended or was halted, so nothing may
    start: unstarted attempts are cancelled and a dead one is settled for good, so that every
    started attempt is reported and the dispatcher can answer the build's Execute step.

    An attempt `in_progress` is watched by this message (its own, or its parent's): while its
    worker may still run it, the message comes back when it surely no longer does; then it is run
    again under the same attempt (its `task_started` stands, and a crash of its consumer costs it
    no attempt), or, in a halted build, failed for good.
    """
    current = current or svc.tasks.get(msg.buildId, msg.taskId)
    if current is None:
        return []  # gone (its build expired): nothing to do
    status, attempt = current.status, current.attempt
    if attempt > msg.attempt:
        return []  # a later attempt exists: this message is stale
    recorded = current.usage or Usage()  # this run's attempts so far
    if status == TaskStatus.completed:
        if current.released is not None:  # its completion took the dispatcher's step itself
            return _replay_handoff(svc, msg, current, halted=halted)
        tell_dispatcher(svc, msg, "completed", recorded.costUsd or 0.0)
    elif status in FAILED_TASK_STATUSES:
        tell_dispatcher(svc, msg, "failed", recorded.costUsd or 0.0)
    elif status == TaskStatus.cancelled and attempt < msg.attempt:
        tell_dispatcher(svc, msg, "cancelled", 0.0)  # the report of its cancel may have been lost
    elif status in UNSTARTED_TASK_STATUSES and (halted or attempt < msg.attempt):
        if halted:
            cancel_unstarted(svc, msg)
        elif not handed:  # the claim lost to a race it may win now
            raise ComeBackLater(f"{msg.taskId} attempt {msg.attempt} could not be claimed yet", 1.0)
    elif status == TaskStatus.queued and attempt == msg.attempt:
        retry_or_report(svc, msg.model_copy(update={"spent": recorded}), True)  # the retry may not have been sent
    elif status == TaskStatus.in_progress and attempt == msg.attempt:
        started = current.startedAt or 0
        stale_in = limits.stale_after_s(svc.settings.task_timeout_seconds) - (svc.clock.now_ms() - started) / 1000
        if stale_in > 0:
            raise TaskStillRunning(f"{msg.taskId} attempt {msg.attempt} may still be running; checking later", stale_in)
        if halted:
            settle_failure(
                svc, msg, task, "the worker stopped before the task finished", timed_out=False, started=started,
                usage=msg.spent, final=True,
            )
            return []
        adopted = _adopt(svc, msg, task, started)
        if adopted is None:  # it moved on meanwhile (settled, halted, or run again elsewhere): look again
            fresh = svc.builds.get(msg.buildId, attributes=BUILD_FIELDS)
            return replay(svc, msg, task, handed=handed, halted=fresh is None or stopped(fresh))
        return [adopted]
    return []


def _adopt(svc: Services, msg: TaskMessage, task: Task, started: int) -> Claimed | None:
    """Take over an attempt whose worker died before settling it: the same attempt, run again by
    this consumer, only while the build runs and nobody else took it over. None if that lost."""
    now = svc.clock.now_ms()
    take = (
        Update()
        .set(startedAt=now, updatedAt=now)
        .when(
            "{status} = :ip AND {attempt} = :a AND {startedAt} = :s",
            ip=TaskStatus.in_progress.value,
            a=msg.attempt,
            s=started,
        )
    )
    try:
        transact([svc.tasks.tx_update(msg.buildId, msg.taskId, take), svc.builds.tx_still_running(msg.buildId)])
    except StateConflict:
        return None
    build = kept_build(msg.buildId)
    if build is None:
        fresh = svc.builds.get(msg.buildId, attributes=BUILD_FIELDS)
        if fresh is None:  # expired meanwhile: nothing to run it for
            return None
        build = remember_build(fresh)
    count("task.adopted")
    logger.info("a dead attempt is run again by the message that watches it", extra=msg.model_dump(exclude={"task"}))
    return Claimed(msg, build, task, now)


def _replay_handoff(svc: Services, msg: TaskMessage, current: TaskRecord, *, halted: bool) -> list[Claimed]:
    """Redo what a completion that took the dispatcher's step may not have finished: send the
    released tasks nobody claimed (cancel them if the build stopped), and look after the dependents
    it handed to its own consumer. Returns those this message runs again itself."""
    handed = set(current.handedTo or ())
    stale_s = limits.stale_after_s(svc.settings.task_timeout_seconds)
    resend: list[tuple[str, int]] = []
    watched: list[tuple[TaskMessage, TaskRecord]] = []
    running_for = 0.0  # the longest any handed attempt may still run
    for task_id, attempt in current.released or ():
        child = svc.tasks.get(msg.buildId, task_id)
        if child is None:
            continue
        child_msg = TaskMessage(buildId=msg.buildId, taskId=task_id, attempt=attempt)
        if (task_id, attempt) in handed:
            watched.append((child_msg, child))
            if child.status == TaskStatus.in_progress and child.attempt == attempt:
                running_for = max(running_for, stale_s - (svc.clock.now_ms() - (child.startedAt or 0)) / 1000)
        elif child.attempt < attempt and child.status in UNSTARTED_TASK_STATUSES:
            if halted:
                cancel_unstarted(svc, child_msg)
            else:
                resend.append((task_id, attempt))
    dispatch_state.send_tasks(svc, msg.buildId, resend)
    if running_for > 0:  # all handed at once, so all die at once: look after them together
        raise TaskStillRunning(f"dependents handed by {msg.taskId} may still be running; checking later", running_for)
    adopted: list[Claimed] = []
    for child_msg, child in watched:
        try:
            adopted += replay(
                svc, child_msg, child.task, current=child, handed=True, halted=halted
            )
        except ComeBackLater as exc:  # raced by another consumer: those adopted here wait for the next look
            raise ComeBackLater(str(exc), max(exc.after_s, stale_s if adopted else 0.0)) from None
    return adopted
