"""The dispatcher: owns a build's DAG while Step Functions owns its life.

Every change to a build's dispatch state is a read, a pure decision (`shared.logic.readiness.scheduler`), and one
write conditioned on the state's version; on a lost race it re-reads and decides again. Events
that report a change (a task skipped) commit in the same transaction as the task's own status, so
replaying a step never emits them twice. Tasks are sent only after the state commits, and a
replayed step re-sends what the last commit decided (the task consumer drops duplicates).
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from shared.dal.queues import send_batch, task_message
from shared.dal.table import Update
from shared.errors import NotFound, StateConflict
from shared.logic.readiness import scheduler
from shared.logic.services import Services, services
from shared.models.build import TERMINAL_BUILD_STATUSES, BuildStatus
from shared.models.events import EventType
from shared.models.messages import (
    DispatchMessage,
    HaltBuild,
    Outcome,
    TaskFinished,
    TaskMessage,
    parse_dispatch_message,
)
from shared.models.plan import (
    RETRYABLE_TASK_STATUSES,
    SKIPPABLE_TASK_STATUSES,
    UNSTARTED_TASK_STATUSES,
    Task,
    TaskStatus,
)
from shared.models.records import BuildRecord, PlanError, TaskRecord
from shared.observability import count, logger

_plans: dict[tuple[str, str], tuple[scheduler.DagSpec, dict[str, Task]]] = {}
# Per process: each build as this process's last dispatch step committed it (buildId -> record). The
# next step here starts from it instead of reading the build again; its version condition still
# decides, and a step that loses re-reads.
_committed: dict[str, BuildRecord] = {}
_committed_lock = threading.Lock()

Op = Callable[[scheduler.DagSpec, scheduler.DispatchState, int], scheduler.Decision]


@dataclass
class Loaded:
    build: BuildRecord
    spec: scheduler.DagSpec
    state: scheduler.DispatchState
    version: int
    now_ms: int  # when it was read (services' clock): the step's deadline check and updatedAt


def plan(svc: Services, build: BuildRecord) -> tuple[scheduler.DagSpec, dict[str, Task]]:
    """The build's current plan: its shape for the scheduler and each task's definition, read once
    per process and plan version (an approval edit makes a new version)."""
    cached = _plans.get(_plan_key(build))
    if cached is None:
        cached = know_plan(build, [i.task for i in dispatched_items(build, svc.tasks.list(build.buildId))])
    return cached


def know_plan(build: BuildRecord, tasks: list[Task]) -> tuple[scheduler.DagSpec, dict[str, Task]]:
    """The plan `build` dispatches over is `tasks`, in its order: what `plan` would read, from the step
    that just wrote those task items (no read in this process)."""
    known = (scheduler.DagSpec.from_tasks(tasks), {t.id: t for t in tasks})
    if len(_plans) > 256:
        _plans.clear()
    _plans[_plan_key(build)] = known
    return known


def _plan_key(build: BuildRecord) -> tuple[str, str]:
    return build.buildId, f"{build.planId}:{build.planVersion}:{streamed_count(build)}"


def committed(build_id: str) -> BuildRecord | None:
    """The build as this process last committed a dispatch step of it, if it did."""
    with _committed_lock:
        return _committed.get(build_id)


def remember_commit(cur: Loaded) -> None:
    """`cur`'s build as the step that wrote `state_update(cur)` left it (once that committed)."""
    build = cur.build.model_copy(
        update={
            "dispatch": cur.state.to_json(cur.spec.order),
            "dispatchVersion": cur.version + 1,
            "haltedBy": cur.state.halted,
        }
    )
    remember_build(build)


def remember_build(build: BuildRecord) -> None:
    """The build as a dispatch step of this process just committed it."""
    with _committed_lock:
        if len(_committed) > 256:
            _committed.clear()
        _committed[build.buildId] = build


def newest(build_id: str, known: BuildRecord | None) -> BuildRecord | None:
    """Of `known` (the build as a step holds it) and what this process last committed, the later."""
    held = committed(build_id)
    if held is None or (known is not None and known.dispatchVersion >= held.dispatchVersion):
        return known
    return held


def forget_commit(build_id: str) -> None:
    with _committed_lock:
        _committed.pop(build_id, None)


def streamed_count(build: BuildRecord) -> int | None:
    """While the plan streams and its plan step has started tasks: how many tasks it has handed to
    the dispatch state (the plan so far, as far as dispatching goes). None once the plan is stored."""
    return None if build.planId else build.streamedTasks


def dispatched_items(build: BuildRecord, items: list[TaskRecord]) -> list[TaskRecord]:
    """Of the build's task items (in plan order), those its dispatch state is written over, in its
    order: all of them, or while the plan streams, the tasks handed so far in the order handed."""
    streamed = streamed_count(build)
    if streamed is None:
        return items
    handed = [i for i in items if i.streamOrder is not None and i.streamOrder < streamed]
    return sorted(handed, key=lambda i: i.streamOrder or 0)


def dag_spec(svc: Services, build: BuildRecord) -> scheduler.DagSpec:
    return plan(svc, build)[0]


def dispatch_state_of(svc: Services, build: BuildRecord) -> Loaded:
    """The dispatch state of a build item already read."""
    spec = dag_spec(svc, build)
    return Loaded(
        build,
        spec,
        scheduler.DispatchState.from_json(build.dispatch, spec.order),
        build.dispatchVersion,
        svc.clock.now_ms(),
    )


def decide(cur: Loaded, op: Op) -> scheduler.Decision:
    """`op` on the loaded state, after what every step also checks: a cancel, the build's time
    limit and budget. Mutates `cur.state`; nothing is written."""
    max_conc = cur.build.maxConcurrency
    if cur.build.status == BuildStatus.cancelled and cur.state.halted is None:
        # The cancel committed; its halt message may come later (or never, if the API died first):
        # what has not started is cancelled now, not skipped after the build's end.
        scheduler.halt(cur.spec, cur.state, "cancelled")
    if _past_deadline(cur.build, cur.now_ms) and cur.state.halted is None:
        scheduler.halt(cur.spec, cur.state, "timed_out")
    decision = op(cur.spec, cur.state, max_conc)
    budget = cur.build.budgetUsd
    if budget is not None and spent_usd(cur) >= budget and cur.state.halted is None:
        for t, _ in decision.sends:  # decided but not sent: take them back
            cur.state.running.pop(t, None)
            cur.state.attempts[t] = max(0, cur.state.attempts.get(t, 1) - 1)
        scheduler.halt(cur.spec, cur.state, "budget_exceeded")
        decision.sends = []
        decision.all_terminal = scheduler.fill(cur.spec, cur.state, 0).all_terminal
    return decision


def spent_usd(cur: Loaded) -> float:
    """What the build has cost so far: its plan (with heal calls) and every task attempt reported."""
    plan_usage = cur.build.planUsage
    return cur.state.cost_usd + ((plan_usage.costUsd if plan_usage else None) or 0.0)


def state_update(cur: Loaded) -> Update:
    """The write of a step: the new dispatch state, if the version read is still the latest."""
    return (
        Update()
        .set(
            dispatch=cur.state.to_json(cur.spec.order),
            dispatchVersion=cur.version + 1,
            haltedBy=cur.state.halted,  # None removes it; a task claim checks it is absent
            updatedAt=cur.now_ms,
        )
        .when("attribute_not_exists({dispatchVersion}) OR {dispatchVersion} = :ver", ver=cur.version)
    )


def apply(
    svc: Services, build_id: str, op: Op, *, label: str, known: BuildRecord | None = None
) -> tuple[Loaded, scheduler.Decision]:
    """Run `op` against the build's dispatch state until its commit wins; then act on the decision.

    `known`: the build as the caller just read and wrote it, tried first instead of a read (its
    version condition decides); a decision that would act without that commit (nothing to do, skips,
    cancels) is taken on a fresh read instead."""
    with svc.events.serial(build_id):  # this process's dispatch steps of the build take turns: no lost races
        for _ in range(51):
            build, from_known, known = known or svc.builds.require(build_id), known is not None, None
            cur = dispatch_state_of(svc, build)
            decision = decide(cur, op)
            if from_known and (decision.duplicate or decision.skipped or cur.state.halted is not None):
                continue
            if decision.duplicate:
                break
            _record_skips(svc, build_id, decision)
            _cancel_unstarted(svc, build_id, cur)
            update = state_update(cur)
            if decision.sends:
                update.set(stepVersion=cur.version + 1)  # confirmed by sentVersion once they are sent
            try:
                svc.builds.update(build_id, update)
            except StateConflict:
                forget_commit(build_id)
                continue
            remember_commit(cur)
            if cur.state.halted == "budget_exceeded" and not cur.build.haltedBy:
                count("build.budget_exceeded")  # once, by the step that committed the halt
            break
        else:  # pragma: no cover - 50 lost races in a row
            raise RuntimeError(f"dispatch of {build_id} ({label}) kept losing races")
    if decision.duplicate:
        # A replayed step, or a report already applied. If the last step that decided sends died
        # before confirming them, they may never have reached the queue: re-send what is in flight
        # but unclaimed (a copy of a message that did arrive is dropped by the task's claim).
        # Otherwise nothing is sent: each task is enqueued once per attempt.
        step = cur.build.stepVersion
        if cur.build.sentVersion < step:
            send_tasks(svc, build_id, unclaimed(svc, build_id, cur.state), plan(svc, cur.build)[1])
            _confirm_sent(svc, build_id, step)
    elif decision.sends:
        send_tasks(svc, build_id, decision.sends, plan(svc, cur.build)[1])
        _confirm_sent(svc, build_id, cur.version + 1)
    if decision.all_terminal:
        finish_execution(svc, cur)
    return cur, decision


def unclaimed(svc: Services, build_id: str, state: scheduler.DispatchState) -> list[tuple[str, int]]:
    """The (task, attempt) pairs the state has in flight that no worker has claimed yet."""
    out = []
    for task_id, attempt in sorted(state.running.items()):
        item = svc.tasks.get(build_id, task_id)
        if item is None or (item.attempt < attempt and item.status in UNSTARTED_TASK_STATUSES):
            out.append((task_id, attempt))
    return out


def _past_deadline(build: BuildRecord, now_ms: int) -> bool:
    return build.deadlineAt is not None and now_ms > build.deadlineAt


def _record_skips(svc: Services, build_id: str, decision: scheduler.Decision) -> None:
    for task_id, dependency in decision.skipped:
        skip = (
            Update()
            .set(status=TaskStatus.skipped.value, skippedBecause=dependency, updatedAt=svc.clock.now_ms())
            .when("{status} = :pending", pending=TaskStatus.pending.value)
        )
        with contextlib.suppress(StateConflict):  # already skipped by an earlier run of this step
            svc.events.record(
                build_id,
                EventType.task_skipped,
                {"taskId": task_id, "reason": "dependency_failed", "dependency": dependency},
                also=[svc.tasks.tx_update(build_id, task_id, skip)],
            )


def _cancel_unstarted(svc: Services, build_id: str, cur: Loaded) -> None:
    if cur.state.halted is None:
        return
    for task_id in cur.state.cancelled:
        with contextlib.suppress(StateConflict):
            svc.tasks.update(
                build_id,
                task_id,
                Update()
                .set(status=TaskStatus.cancelled.value, updatedAt=svc.clock.now_ms())
                .when("{status} = :pending", pending=TaskStatus.pending.value),
            )


def send_tasks(
    svc: Services, build_id: str, sends: list[tuple[str, int]], definitions: dict[str, Task] | None = None
) -> None:
    """Enqueue (task, attempt) pairs, each with its definition when known."""
    if sends:
        defs = definitions or {}
        send_batch(
            svc.settings.tasks_queue_url,
            [
                task_message(build_id, t, a, idx=i, task=defs[t].model_dump(mode="json") if t in defs else None)
                for i, (t, a) in enumerate(sends)
            ],
        )


def _confirm_sent(svc: Services, build_id: str, version: int) -> None:
    """Record that the tasks decided by the step committed at `version` are on the queue."""
    with contextlib.suppress(StateConflict):  # a later step confirmed its own sends already
        svc.builds.update(
            build_id,
            Update()
            .set(sentVersion=version)
            .when("attribute_not_exists({sentVersion}) OR {sentVersion} < :v", v=version),
        )


def finish_execution(svc: Services, cur: Loaded) -> None:
    # The token is read after the step that settled the last task committed, not from the item that
    # step loaded: an Execute that stored its token in between (a re-opened run starting while its
    # task finishes) then either sees every task settled itself or has its token answered here.
    now = svc.builds.get(cur.build.buildId, attributes=["executeToken"])
    token = now.executeToken if now else None
    if not token:
        return
    if cur.state.halted == "budget_exceeded":
        svc.workflow.fail(
            token,
            "BudgetExceeded",
            f"Recorded cost ${spent_usd(cur):.4f} reached the budget of "
            f"${cur.build.budgetUsd or 0.0:.4f}; no new task was started.",
        )
    elif cur.state.halted == "timed_out":  # the dispatcher saw the deadline pass before Step Functions did
        svc.workflow.fail(token, "BuildTimedOut", "The build ran past its time limit.")
    elif cur.state.halted == "planning_failed":  # the tasks started while it streamed have settled
        error = cur.build.planError or PlanError()
        svc.workflow.fail(token, error.Error, error.Cause)
    elif cur.state.halted is None:
        svc.workflow.succeed(token, {"halted": None})


# --- entry points ---------------------------------------------------------------------------------
def await_approval(build_id: str, token: str, svc: Services | None = None) -> dict[str, Any]:
    svc = svc or services()
    build = svc.builds.require(build_id)
    expires = svc.clock.now_ms() + svc.settings.plan_approval_timeout_seconds * 1000
    try:
        svc.events.record(
            build_id,
            EventType.plan_approval_required,
            {
                "planId": build.planId,
                "expiresAt": expires,
                "taskCount": build.taskCount,
                "estimatedDuration": build.estimatedDuration or 0.0,
                "approvalUrl": f"/builds/{build_id}/approval",
            },
            also=[
                svc.builds.tx_update(
                    build_id,
                    Update()
                    .set(
                        status=BuildStatus.awaiting_approval.value,
                        approvalToken=token,
                        approvalRequestedAt=svc.clock.now_ms(),
                        approvalExpiresAt=expires,
                        updatedAt=svc.clock.now_ms(),
                    )
                    .when("{status} = :planning", planning=BuildStatus.planning.value),
                )
            ],
        )
    except StateConflict:
        # Step Functions retried this step (with a new token): the request stands, the new token
        # is the one an approval must answer. Or the build moved on: nothing to do.
        with contextlib.suppress(StateConflict):
            svc.builds.update(
                build_id,
                Update()
                .set(approvalToken=token, updatedAt=svc.clock.now_ms())
                .when("{status} = :waiting", waiting=BuildStatus.awaiting_approval.value),
            )
        logger.info("approval already requested or build moved on", extra={"buildId": build_id})
        _answer_decided(svc, build_id, token)
    return {"awaiting": True}


def _answer_decided(svc: Services, build_id: str, token: str) -> None:
    """A decision taken while an earlier try of this step waited was answered to that try's token:
    answer this one (an approved edit once its plan is stored; the approval call does it then)."""
    build = svc.builds.get(build_id)
    if build is None or build.approvalToken != token or not build.approvalDecision:
        return
    if build.approvalDecision == "rejected":
        svc.workflow.fail(token, "ApprovalRejected", build.approvalReason or "The plan was rejected.")
    elif not build.approvalEdit or (build.planStoredVersion or 1) >= (build.planVersion or 1):
        svc.workflow.succeed(token, {"approved": True})


def execute(build_id: str, token: str, svc: Services | None = None) -> dict[str, Any]:
    svc = svc or services()
    build = svc.builds.require(build_id)
    if build.status in TERMINAL_BUILD_STATUSES:
        svc.workflow.fail(token, "BuildCancelled", f"build is {build.status}")
        return {"started": False}
    if build.executeStartedAt is None:
        run_started = build.run_started_at  # a retried run has its own time limit
        remaining = svc.settings.build_timeout_seconds - (svc.clock.now_ms() - run_started) / 1000
        approved = build.approvedAt or 0
        if approved >= run_started:  # time spent waiting for a human does not count
            remaining += (approved - (build.approvalRequestedAt or approved)) / 1000
        deadline = svc.clock.now_ms() + int(max(1.0, remaining) * 1000)
    else:
        deadline = build.deadlineAt or svc.clock.now_ms()
    now = svc.clock.now_ms()
    executing: dict[str, Any] = {
        "status": BuildStatus.executing.value,
        "executeToken": token,
        "deadlineAt": deadline,
        "executeStartedAt": build.executeStartedAt or now,
        "updatedAt": now,
    }
    try:
        svc.builds.update(build_id, Update().set_many(executing).when_not_in("status", TERMINAL_BUILD_STATUSES))
    except StateConflict:
        svc.workflow.fail(token, "BuildCancelled", "build ended before execution")
        return {"started": False}
    if build.runs > 1:  # a re-opened run: its API call may have died after its commit
        reopen_items(svc, build_id, build)
    # The first try starts from the build as read and just written: no read back.
    apply(svc, build_id, lambda spec, st, m: scheduler.start(spec, st, m), label="start",
          known=build.model_copy(update={**executing, "status": BuildStatus.executing}))
    return {"started": True}


def settle_plan_failure(build_id: str, token: str, error: dict[str, Any], svc: Services | None = None) -> dict[str, Any]:
    """The Plan step crashed or timed out (`error`, as Step Functions caught it). Tasks it started
    while the plan streamed finish first: the caught error is kept as the planning error (unless the
    plan step stored its own), nothing more starts, and `token` is answered once every started task
    has settled, then Finalize ends the build `failed`. Answered at once when nothing streamed or the
    build has ended."""
    svc = svc or services()
    build = svc.builds.require(build_id)
    if build.status in TERMINAL_BUILD_STATUSES or build.dispatch is None:
        svc.workflow.succeed(token, {"waited": False})
        return {"waited": False}
    update = Update().set(executeToken=token, updatedAt=svc.clock.now_ms())
    if not build.planError:
        update.set(planError={"Error": str(error.get("Error") or "PlanningFailed"), "Cause": str(error.get("Cause") or "")[:2000]})
    try:
        svc.builds.update(build_id, update.when_not_in("status", TERMINAL_BUILD_STATUSES))
    except StateConflict:  # cancelled meanwhile: Finalize sees it ended
        svc.workflow.succeed(token, {"waited": False})
        return {"waited": False}
    forget_commit(build_id)
    count("plan.crashed_after_start")
    logger.warning("the plan step failed after tasks started; they finish first", extra={"error": parse_cause(error)[:500]})
    cur, decision = apply(svc, build_id, lambda spec, st, m: scheduler.halt(spec, st, "planning_failed"), label="plan failed")
    # The plan step may have died between committing a start and sending it: send what is unclaimed.
    step = cur.build.stepVersion
    if not decision.all_terminal and cur.build.sentVersion < step:
        send_tasks(svc, build_id, unclaimed(svc, build_id, cur.state), plan(svc, cur.build)[1])
        _confirm_sent(svc, build_id, step)
    return {"waited": True}


def finished_op(task_id: str, outcome: str, attempt: int, cost: float) -> Op:
    """The step for "attempt `attempt` of `task_id` ended with `outcome`"."""

    def op(spec: scheduler.DagSpec, st: scheduler.DispatchState, m: int) -> scheduler.Decision:
        in_flight = st.running.get(task_id)
        if in_flight is None or attempt < in_flight:
            # settled already, or a stale report from an attempt older than the one now in
            # flight (a retried task must not be failed again by its previous run's message)
            return scheduler.duplicate(spec, st)
        st.attempts[task_id] = max(st.attempts.get(task_id, 0), attempt)
        if outcome == "completed":
            return scheduler.task_succeeded(spec, st, task_id, m, cost)
        if outcome == "cancelled":
            st.running.pop(task_id, None)
            st.cancelled.add(task_id)
            return scheduler.fill(spec, st, m)
        return scheduler.task_failed(spec, st, task_id, m, cost)

    return op


def on_finished(message: DispatchMessage | dict[str, Any], svc: Services | None = None) -> None:
    """A message from the task-finished FIFO queue (one group per build)."""
    svc = svc or services()
    msg = parse_dispatch_message(message) if isinstance(message, dict) else message
    if msg is None:
        logger.warning("unknown dispatch message dropped", extra={"kind": str(dict(message).get("kind"))})
        return
    build_id = msg.buildId
    try:
        if isinstance(msg, TaskFinished):
            op = finished_op(msg.taskId, msg.outcome, msg.attempt, msg.costUsd)
            apply(svc, build_id, op, label=f"finished {msg.taskId}")
        elif isinstance(msg, HaltBuild):
            reason = msg.reason
            apply(svc, build_id, lambda spec, st, m: scheduler.halt(spec, st, reason), label="halt")
        else:
            reopen_task(build_id, msg.taskId, svc)
    except NotFound:
        logger.warning("dispatch message for a missing build dropped", extra={"buildId": build_id})


class RunEnding(Exception):
    """Every task of the run has settled: its Execute step is answered (or about to be) and Finalize
    is ending the run, so no task can join it any more; the caller re-opens the build once it ended."""


class NotSettled(Exception):
    """The task's attempt ended (its item says so) but the dispatcher has not taken that step yet: a
    retry or skip now would act on a state that still has it running and be lost; the caller waits."""


def _unsettled(st: scheduler.DispatchState, task_id: str, in_run: bool) -> None:
    if in_run and task_id in st.running:
        raise NotSettled(task_id)


def reopenable(svc: Services, build: BuildRecord, task_id: str) -> list[str]:
    """What a retry of `task_id` would re-open: the task and those of its skipped dependents that can
    run again (one that also waits on another failed task stays skipped), and the tasks a halt
    cancelled. Empty: nothing can run."""
    spec = dag_spec(svc, build)
    state = scheduler.DispatchState.from_json(build.dispatch, spec.order)
    return scheduler.retry(spec, state, task_id, build.maxConcurrency)


def _ending(svc: Services, build: BuildRecord) -> bool:
    spec = dag_spec(svc, build)
    return scheduler.all_terminal(spec, scheduler.DispatchState.from_json(build.dispatch, spec.order))


def _reopen_items(svc: Services, build_id: str, task_ids: list[str]) -> None:
    for t in task_ids:
        with contextlib.suppress(StateConflict):
            svc.tasks.update(
                build_id,
                t,
                Update()
                .set(status=TaskStatus.pending.value, error=None, skippedBecause=None, updatedAt=svc.clock.now_ms())
                .when_in("status", RETRYABLE_TASK_STATUSES),
            )


def reopen_items(svc: Services, build_id: str, build: BuildRecord | None = None) -> list[str]:
    """Make pending the items of the tasks the dispatch state re-opened while their items still show
    how an earlier run ended them (failed, timed out, skipped, cancelled): a task the state no longer
    holds closed, not yet sent in this run or sent with a later attempt than its item's. Each write is
    conditioned on the item as read, so a task that ran meanwhile keeps its outcome. Returns the ids."""
    build = build or svc.builds.require(build_id)
    spec = dag_spec(svc, build)
    state = scheduler.DispatchState.from_json(build.dispatch, spec.order)
    held = state.failed | state.skipped | state.cancelled | state.done
    out = []
    for item in svc.tasks.list(build_id, attributes=["attempt"]):
        task_id, attempt = item.taskId, item.attempt
        if task_id in held or task_id not in spec.deps or item.status not in RETRYABLE_TASK_STATUSES:
            continue
        if task_id in state.running and attempt >= state.running[task_id]:
            continue  # this run's attempt ended: the dispatcher hears of it
        with contextlib.suppress(StateConflict):
            svc.tasks.update(
                build_id,
                task_id,
                Update()
                .set(status=TaskStatus.pending.value, error=None, skippedBecause=None, updatedAt=svc.clock.now_ms())
                .when("{status} = :s", s=item.status.value)
                .when("attribute_not_exists({attempt}) OR {attempt} = :a", a=attempt),
            )
            out.append(task_id)
    return out


def reopen_task(build_id: str, task_id: str, svc: Services, *, in_run: bool = False) -> list[str]:
    """Re-open a task and its skipped dependents that can run (items first, so a re-opened child can
    be claimed), then let the scheduler start it. Returns the re-opened ids.

    `in_run`: the build is executing and the task is to join its current run; raises RunEnding when
    that run has already settled every task (its end is being recorded)."""
    build = svc.builds.require(build_id)
    if in_run and _ending(svc, build):
        raise RunEnding(build_id)
    spec = dag_spec(svc, build)
    _unsettled(scheduler.DispatchState.from_json(build.dispatch, spec.order), task_id, in_run)
    reopened = reopenable(svc, build, task_id)
    _reopen_items(svc, build_id, reopened)

    def op(spec: scheduler.DagSpec, st: scheduler.DispatchState, m: int) -> scheduler.Decision:
        if in_run and scheduler.all_terminal(spec, st):
            raise RunEnding(build_id)
        _unsettled(st, task_id, in_run)
        scheduler.retry(spec, st, task_id, m)
        return scheduler.fill(spec, st, m)

    apply(svc, build_id, op, label=f"retry {task_id}")
    return reopened


def skip_failed_task(build_id: str, task_id: str, svc: Services, *, in_run: bool = False) -> list[str]:
    """The user skips a failed task: it becomes `skipped` (reason user) and the dependents it held
    back run without its output. Returns the re-opened dependents. `in_run` as for reopen_task."""
    build = svc.builds.require(build_id)
    if in_run and _ending(svc, build):
        raise RunEnding(build_id)
    spec = dag_spec(svc, build)
    state = scheduler.DispatchState.from_json(build.dispatch, spec.order)
    _unsettled(state, task_id, in_run)
    reopened = scheduler.skip(spec, state, task_id, build.maxConcurrency) or []
    with contextlib.suppress(StateConflict):  # skipped already by an earlier try of this request
        svc.events.record(
            build_id,
            EventType.task_skipped,
            {"taskId": task_id, "reason": "user"},
            also=[
                svc.tasks.tx_update(
                    build_id,
                    task_id,
                    Update()
                    .set(status=TaskStatus.skipped.value, skippedBecause="user", updatedAt=svc.clock.now_ms())
                    .when_in("status", SKIPPABLE_TASK_STATUSES),
                )
            ],
        )
    _reopen_items(svc, build_id, reopened)

    def op(spec: scheduler.DagSpec, st: scheduler.DispatchState, m: int) -> scheduler.Decision:
        if in_run and scheduler.all_terminal(spec, st):
            raise RunEnding(build_id)
        _unsettled(st, task_id, in_run)
        if scheduler.skip(spec, st, task_id, m) is None:
            return scheduler.duplicate(spec, st)
        return scheduler.fill(spec, st, m)

    apply(svc, build_id, op, label=f"skip {task_id}")
    return reopened


def parse_cause(error: dict[str, Any]) -> str:
    cause = error.get("Cause") or ""
    try:
        parsed = json.loads(cause)
        if isinstance(parsed, dict) and parsed.get("errorMessage"):
            return str(parsed["errorMessage"])
    except ValueError:
        pass
    return str(cause) or str(error.get("Error") or "unknown error")


def on_dead_task(message: TaskMessage, svc: Services | None = None) -> None:
    """A task message that kept killing its function reached the tasks DLQ: fail that attempt for
    good so the build does not hang, and let the dispatcher skip its dependents. Only the attempt the
    message names: a later attempt owns the task (a retry already on its way), and a task that
    settled meanwhile keeps its outcome."""
    svc = svc or services()
    build_id, task_id = message.buildId, message.taskId
    item = svc.tasks.get(build_id, task_id)
    if item is None:
        return
    attempt = message.attempt
    handed = item.handedTo
    if item.status == TaskStatus.completed and handed and item.attempt == attempt:
        # The message outlived the dependents its completion handed to the same worker (handoff):
        # what kept it coming back is among them; those that did settle keep their outcome.
        for child, child_attempt in handed:
            on_dead_task(TaskMessage(buildId=build_id, taskId=child, attempt=child_attempt), svc)
        return
    name = item.task.name
    # What the run's earlier attempts cost (each billed on the item when it settled) travels with the
    # message: the run's total is what the task reports and the build's budget counts, as for any
    # failure. The dead attempt itself left no usage behind.
    spent = message.spent
    dead = Update().set(status=TaskStatus.failed.value, error="dead-lettered", updatedAt=svc.clock.now_ms())
    unstarted = dead.among("status", UNSTARTED_TASK_STATUSES)
    dead.when(
        "({attempt} = :a AND {status} = :ip) OR ({attempt} < :a AND " + unstarted + ")",
        a=attempt,
        ip=TaskStatus.in_progress.value,
    )
    if spent:
        dead.set(usage=spent.model_dump())
    try:
        svc.events.record(
            build_id,
            EventType.task_failed,
            {
                "taskId": task_id,
                "taskName": name,
                "error": "the task kept stopping its worker; it was dead-lettered",
                "attempt": attempt,
                "willRetry": False,
            },
            also=[svc.tasks.tx_update(build_id, task_id, dead)],
        )
        outcome: Outcome | None = "failed"
        cost = (spent.costUsd if spent else None) or 0.0
    except StateConflict:
        # Not this attempt's to fail. If the attempt did settle, tell the dispatcher again (its own
        # report may be what was lost); a later attempt reports for itself.
        current = svc.tasks.get(build_id, task_id)
        settled: dict[str, Outcome] = {
            TaskStatus.completed: "completed",
            TaskStatus.failed: "failed",
            TaskStatus.timeout: "failed",
            TaskStatus.cancelled: "cancelled",
        }
        same = current is not None and current.attempt == attempt
        outcome = settled.get(current.status) if current is not None and same else None
        # the run's total, as it reported
        cost = (current.usage.costUsd if current is not None and current.usage else None) or 0.0
    if outcome is None:
        return
    on_finished(TaskFinished(buildId=build_id, taskId=task_id, attempt=attempt, outcome=outcome, costUsd=cost), svc)
