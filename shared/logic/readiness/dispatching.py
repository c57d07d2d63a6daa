"""The dispatcher: owns a build's DAG while Step Functions owns its life.

The workflow's steps (wait for approval, execute, settle a failed plan) and the dispatch queue's
messages (a task finished, a halt, a re-open, a task dead-lettered), each applied to the build's
dispatch state (`shared.logic.readiness.dispatch_state`)."""

from __future__ import annotations

import contextlib
import json
from typing import Any

from shared.dal.table import Update
from shared.errors import NotFound, StateConflict
from shared.logic.readiness import scheduler
from shared.logic.readiness.dispatch_state import (
    apply,
    confirm_sent,
    finished_op,
    forget_commit,
    plan,
    send_tasks,
    unclaimed,
)
from shared.logic.readiness.reopen import reopen_items, reopen_task
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
    UNSTARTED_TASK_STATUSES,
    TaskStatus,
)
from shared.observability import count, logger


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
        confirm_sent(svc, build_id, step)
    return {"waited": True}


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
