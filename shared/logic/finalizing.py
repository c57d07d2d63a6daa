"""The Finalize step: the build's one terminal event, with its metrics and files."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.metrics import MetricUnit

from shared.dal.table import Update
from shared.errors import StateConflict
from shared.logic import runs
from shared.logic.readiness.dispatching import parse_cause
from shared.logic.services import Services, services
from shared.models.build import (
    SUCCEEDED_BUILD_STATUSES,
    TERMINAL_BUILD_STATUSES,
    BuildMetrics,
    BuildStatus,
    FailureReason,
)
from shared.models.events import EventType
from shared.models.plan import FAILED_TASK_STATUSES, TaskStatus, Usage
from shared.models.records import BuildRecord, TaskRecord
from shared.observability import count, logger

_REASONS = {
    "CircularDependencies": FailureReason.circular_dependencies,
    "PlanTooLarge": FailureReason.plan_too_large,
    "ApprovalRejected": FailureReason.approval_rejected,
    "ApprovalTimeout": FailureReason.approval_timeout,
    "BuildTimedOut": FailureReason.timed_out,
    "BudgetExceeded": FailureReason.budget_exceeded,
}

_MAX_MESSAGE = 2000  # characters of a failure's message kept (in its event and on the build)


def metrics_of(build: BuildRecord, tasks: list[TaskRecord], now_ms: int) -> BuildMetrics:
    """Counts, tokens and cost: the plan (with its heal calls) and every attempt of every task,
    failed, timed-out and abandoned ones included. Cost is None when some call's price is unknown."""
    plan_usage = build.planUsage or Usage()
    plan_cost = plan_usage.costUsd
    m = BuildMetrics(
        totalTasks=len(tasks),
        promptTokens=plan_usage.promptTokens,
        completionTokens=plan_usage.completionTokens,
        costUsd=None if plan_cost is None else float(plan_cost),
        planCostUsd=None if plan_cost is None else round(float(plan_cost), 8),
    )
    for t in tasks:
        status = t.status
        m.completedTasks += status == TaskStatus.completed
        m.failedTasks += status in FAILED_TASK_STATUSES
        m.skippedTasks += status == TaskStatus.skipped
        m.cachedTasks += t.cached and status == TaskStatus.completed
        if t.spentUsd is not None:  # every attempt of every run of the task
            prompt, completion = t.spentPromptTokens, t.spentCompletionTokens
            cost = None if t.spentUnpriced else t.spentUsd
        else:
            usage = t.usage or Usage()
            prompt, completion, cost = usage.promptTokens, usage.completionTokens, usage.costUsd
        m.promptTokens += prompt
        m.completionTokens += completion
        if m.costUsd is not None:
            m.costUsd = None if cost is None else round(m.costUsd + cost, 8)
    m.durationMs = max(0, (build.finishedAt or now_ms) - build.createdAt)
    return m


def file_paths(tasks: list[TaskRecord]) -> list[str]:
    paths: dict[str, None] = {}
    for t in tasks:
        for f in t.files:
            paths[f.path] = None
    return sorted(paths)


def finalize(state: dict[str, Any], svc: Services | None = None, *, run_id: str | None = None) -> dict[str, Any]:
    """`run_id`: the execution's name; the end is recorded only for the build's current run."""
    svc = svc or services()
    build_id = state["buildId"]
    build = svc.builds.require(build_id)
    if run_id is not None and runs.current_run(build) != run_id:
        # a replay of a run whose end was recorded, after a retry or skip re-opened the build
        return {"succeeded": True, "status": "superseded"}
    if build.status in TERMINAL_BUILD_STATUSES:  # replayed, or cancelled meanwhile
        return _outcome(build.status)
    tasks = svc.tasks.list(build_id)
    metrics = metrics_of(build, tasks, svc.clock.now_ms())
    error = state.get("error")
    # Planning failed after tasks started (in code, or the plan step crashed): its reason, in its words.
    planned_error = build.planError
    if error and planned_error and (error.get("Error") == planned_error.Error or error.get("stage") == "plan"):
        error = {**error, **planned_error.model_dump()}
    not_terminal = Update().when_not_in("status", TERMINAL_BUILD_STATUSES)
    if not error:
        status = (
            BuildStatus.completed if metrics.completedTasks == metrics.totalTasks else BuildStatus.completed_with_errors
        )
        data: dict[str, Any] = {"status": status.value, "metrics": metrics.model_dump(), "files": file_paths(tasks)}
        event = EventType.build_completed
    else:
        name = str(error.get("Error", ""))
        reason = _REASONS.get(name) or FailureReason.planning_failed
        status = BuildStatus.timed_out if reason == FailureReason.timed_out else BuildStatus.failed
        message = parse_cause(error)
        if len(message) > _MAX_MESSAGE:
            message = message[: _MAX_MESSAGE - 1] + "…"
        data = {"reason": reason.value, "message": message}
        event = EventType.build_failed
        if reason == FailureReason.timed_out:
            _halt_dispatch(svc, build_id, "timed_out")
        elif error.get("stage") == "plan":  # tasks may have started while the plan streamed
            _halt_dispatch(svc, build_id, "planning_failed")
    update = not_terminal.set(
        status=status.value,
        metrics=metrics.model_dump(),
        finishedAt=svc.clock.now_ms(),
        updatedAt=svc.clock.now_ms(),
        failureReason=data.get("reason"),
        message=data.get("message"),
    )
    try:
        svc.events.record(build_id, event, data, also=[svc.builds.tx_update(build_id, update)])
    except StateConflict:
        return _outcome(svc.builds.require(build_id).status)
    count(f"build.{status.value}")
    count("build.duration_ms", metrics.durationMs, MetricUnit.Milliseconds)
    count("build.tasks", metrics.totalTasks)
    count("build.cost_usd", metrics.costUsd or 0.0, MetricUnit.NoUnit)
    logger.info(
        "build.end",
        extra={"status": status.value, "durationMs": metrics.durationMs, "tasks": metrics.totalTasks,
               "costUsd": metrics.costUsd, "planCostUsd": metrics.planCostUsd},
    )
    return _outcome(status.value)


def _halt_dispatch(svc: Services, build_id: str, reason: str) -> None:
    from shared.logic.readiness import scheduler
    from shared.logic.readiness.dispatch_state import apply

    build = svc.builds.get(build_id, attributes=["dispatch"])
    if build is not None and build.dispatch is not None:
        apply(svc, build_id, lambda spec, st, m: scheduler.halt(spec, st, reason), label=reason)


def _outcome(status: str) -> dict[str, Any]:
    return {"succeeded": status in SUCCEEDED_BUILD_STATUSES, "status": str(status)}
