"""The Plan step: stream the provider's plan, show each task as it arrives, validate, store.

Called by Step Functions through functions/plan. Returns what the state machine needs next.
"""

from __future__ import annotations

import contextlib
import json
from typing import Any

from pydantic import BaseModel, ValidationError

from shared.dal.table import Update
from shared.errors import CircularDependencies, PlanningFailed, PlanTooLarge, StateConflict, StepwiseError
from shared.ids import new_plan_id
from shared.logic import runs
from shared.logic.readiness import dag, dispatch_state
from shared.logic.readiness.plan_validation import (
    BLOCKED_MESSAGE,
    HARD_ERROR_MESSAGE,
    FieldClipper,
    Healer,
    plan_too_large_message,
    validate_plan,
)
from shared.logic.readiness.stream_start import StreamStarter
from shared.logic.services import Services, services
from shared.models.build import TERMINAL_BUILD_STATUSES, BuildStatus
from shared.models.events import EventType, PlanGeneratedData, PlannedTask
from shared.models.plan import Task, Usage
from shared.models.records import BuildRecord
from shared.observability import count, fingerprint, logger
from shared.providers.base import (
    MalformedTask,
    PlanContext,
    PlanStream,
    ProviderError,
    Spend,
    TaskContext,
    TransformKind,
)

_PARTIALS_PER_COMMIT = 25  # plan_partial events in one commit, beside the handed tasks' items (a transaction holds 100)


def run_plan(build_id: str, svc: Services | None = None, *, execution: dict[str, Any] | None = None) -> dict[str, Any]:
    """`execution`: Step Functions' `$$.Execution` (its Name and Input). A run whose commit never
    lands (the API call that started it died, or another re-open won) answers `superseded` and
    changes nothing (runs.py)."""
    svc = svc or services()
    own: BuildRecord | None = None
    if execution and execution.get("Name"):
        started = execution.get("Input") or {}
        if isinstance(started, str):
            started = json.loads(started or "{}")
        own = runs.wait_for_own_run(svc, build_id, str(execution["Name"]), started.get("requestedAt"))
        if own is None:
            logger.info("run superseded: its commit never landed", extra={"run": execution["Name"]})
            count("run.superseded")
            return {**_ended(build_id, "superseded"), "superseded": True}
    build = own or svc.builds.require(build_id)  # the run's wait already read it
    svc.webhook_url(build_id, build=build)  # where its events go, known from this read
    if build.planId:  # a retried invocation: the plan is already stored
        return _result(svc, build)
    if build.status in TERMINAL_BUILD_STATUSES:  # cancelled before its plan began
        return _ended(build_id, build.status)
    if build.status != BuildStatus.planning:
        raise PlanningFailed(f"build is {build.status}, not planning")

    plan_id = new_plan_id()
    clipper = FieldClipper()
    starter = StreamStarter(svc, build, plan_id, clipper)
    if build.streamedTasks is not None:  # a retried invocation, after it had started tasks
        return _failed_after_start(svc, starter, PlanningFailed("planning was interrupted after tasks had started"))
    try:
        return _plan(svc, build, plan_id, clipper, starter)
    except (PlanningFailed, PlanTooLarge, CircularDependencies) as exc:
        if not starter.committed:
            raise
        return _failed_after_start(svc, starter, exc)


def _failed_after_start(svc: Services, starter: StreamStarter, exc: StepwiseError) -> dict[str, Any]:
    """The tasks started while the plan streamed finish (the Execute step waits for them), then the
    build ends `failed` with this reason."""
    if not starter.fail(exc):
        return _ended(starter.build_id, "cancelled")
    return _result(svc, svc.builds.require(starter.build_id))


def _plan(
    svc: Services, build: BuildRecord, plan_id: str, clipper: FieldClipper, starter: StreamStarter
) -> dict[str, Any]:
    build_id = build.buildId
    provider = svc.provider
    limit = svc.settings.max_plan_tasks
    context = PlanContext(
        build_id=build_id, framework=build.framework, files=_input_files(svc, build), max_tasks=limit
    )
    items: list[dict[str, Any] | MalformedTask] = []
    shown = 0
    logger.info(
        "plan.start",
        extra={"prompt": fingerprint(build.prompt), "files": len(context.files), "provider": provider.name},
    )
    stream: PlanStream | None = None
    # Each planning event commits only while the build still plans, so a cancel ends the log cleanly.
    still_planning = (
        Update()
        .when("{status} = :planning", planning=BuildStatus.planning.value)
        .tx_check(svc.builds.table, {"buildId": build_id})
    )
    # Items read and not offered yet: those that closed in one piece of the stream are offered
    # together, their plan_partial events (one per valid task) recorded in one commit.
    pending: list[dict[str, Any] | MalformedTask] = []
    partials: list[dict[str, Any]] = []

    def record_partials(also: list[dict[str, Any]], events: list[dict[str, Any]]) -> None:
        entries: list[tuple[EventType, BaseModel | dict[str, Any]]] = [(EventType.plan_partial, p) for p in events]
        svc.events.record_many(build_id, entries, also=also or [still_planning])

    def offer_pending() -> None:
        # With their plan_partial events, the tasks are handed to the dispatch state (and started,
        # if their dependencies completed) in the same commit. What follows an invalid or malformed
        # item waits for the whole plan.
        events = list(partials)
        starter.offer(pending, (lambda also: record_partials(also, events)) if events else None)
        pending.clear()
        partials.clear()

    try:
        stream = provider.plan_stream(build.prompt, context)
        tasks_in = iter(stream)
        for raw in tasks_in:
            if len(items) >= limit:  # one task too many: stop reading (and paying for) the stream
                offer_pending()  # those read before it are shown all the same
                close = getattr(tasks_in, "close", None)
                if close is not None:
                    close()
                count("plan.too_large")
                _keep_plan_cost(svc, build_id, stream.usage)  # what was read is billed all the same
                raise PlanTooLarge(plan_too_large_message(limit))
            item = clipper.clip(raw)
            items.append(item)
            pending.append(item)
            if isinstance(item, dict):
                with contextlib.suppress(ValidationError):
                    task = Task.model_validate(item)
                    shown += 1
                    partials.append({"planId": plan_id, "totalTasksSoFar": shown, "latestTasks": [task.planned()]})
            if not stream.more_ready or len(partials) >= _PARTIALS_PER_COMMIT:
                offer_pending()
        offer_pending()
        usage = stream.usage
    except ProviderError as exc:
        _keep_plan_cost(svc, build_id, stream.usage if stream is not None else Usage())  # billed all the same
        raise PlanningFailed(f"the AI provider failed while planning: {exc}") from None
    except StateConflict:  # cancelled while the plan streamed: nothing more is recorded
        return _ended(build_id, "cancelled")

    heal_usage: list[Usage] = []
    plan = validate_plan(
        items,
        _healer(svc, build_id, heal_usage),
        allow_linear=svc.settings.allow_linear_fallback,
        approval_required=build.requireApproval,
        clipper=clipper,
        fixed=starter.gate.fixed() if starter.committed else None,  # started tasks keep their dependencies
    )
    for extra in heal_usage:
        usage = usage + extra
    try:
        for w in plan.warnings:
            svc.events.record(
                build_id,
                EventType.plan_warning,
                {"planId": plan_id, "warning": w.warning, "message": w.message[:2000], "cycles": w.cycles},
                also=[still_planning],
            )
    except StateConflict:
        return _ended(build_id, "cancelled")
    if plan.cycles:
        count("plan.cycles_detected")
    if plan.recovery:
        count(f"plan.recovery.{plan.recovery.value}")
    if plan.failed:  # rung E: nothing left to try, nobody to ask
        count("plan.hard_blocked")
        _keep_plan_cost(svc, build_id, usage)
        raise CircularDependencies(f"{HARD_ERROR_MESSAGE} Cycles: " + "; ".join(plan.cycles))
    if not plan.tasks:
        _keep_plan_cost(svc, build_id, usage)
        raise PlanningFailed("the AI provider returned no usable task")
    logger.info("plan.complete", extra={"tasks": len(plan.tasks), "tokens": {"prompt": usage.promptTokens,
                "completion": usage.completionTokens}, "costUsd": usage.costUsd, "estimated": usage.estimated})

    # Each handed task's item holds its place in the order handed and its definition as handed.
    handed = {t.id: (i, t) for i, t in enumerate(starter.gate.handed[: starter.committed])}
    svc.tasks.put_plan(build_id, plan_id, plan.tasks, handed=handed)
    deps = {t.id: t.dependencies for t in plan.tasks}
    estimated = 0.0 if plan.blocked else dag.critical_path_length(deps, {t.id: t.estimatedDuration for t in plan.tasks})

    def update() -> Update:
        return (
            Update()
            .set(
                planId=plan_id,
                planVersion=1,
                recovery=plan.recovery.value if plan.recovery else None,
                estimatedDuration=estimated,
                taskCount=len(plan.tasks),
                blocked=plan.blocked,
                cycles=plan.cycles or None,
                planUsage=usage.model_dump(),
                updatedAt=svc.clock.now_ms(),
            )
            .when("{status} = :planning", planning=BuildStatus.planning.value)
        )

    try:
        if plan.blocked:  # rung D: the user edits the plan (the approval route); not an alarm
            svc.events.record(
                build_id,
                EventType.plan_blocked,
                {
                    "planId": plan_id,
                    "reason": "circular_dependencies",
                    "message": BLOCKED_MESSAGE,
                    "cycles": plan.cycles,
                    "cycleTasks": plan.cycle_tasks,
                    "edges": plan.cycle_edges,
                },
                also=[svc.builds.tx_update(build_id, update())],
            )
            logger.warning("plan blocked on cycles", extra={"cycles": plan.cycles})
        else:
            data = PlanGeneratedData(
                planId=plan_id,
                planVersion=1,
                taskCount=len(plan.tasks),
                estimatedDuration=estimated,
                recovery=plan.recovery.value if plan.recovery else None,
                tasks=[PlannedTask.model_validate(t.planned()) for t in plan.tasks],
            )

            def record(final: Update) -> None:
                svc.events.record(build_id, EventType.plan_generated, data, also=[svc.builds.tx_update(build_id, final)])

            if not starter.committed:
                record(update())
            elif not starter.store(plan.tasks, update, record):  # with the tasks started as it streamed
                return _ended(build_id, "cancelled")
    except StateConflict:
        return _ended(build_id, "cancelled")
    # The build as that commit left it (it held only while the build planned): no read back.
    if not plan.blocked:  # what the dispatch steps of this process would read back
        dispatch_state.know_plan(build.model_copy(update={"planId": plan_id, "planVersion": 1}), plan.tasks)
    return _result(svc, build.model_copy(update={"taskCount": len(plan.tasks), "blocked": plan.blocked}))


def _ended(build_id: str, status: str) -> dict[str, Any]:
    """The build ended (cancelled) while it planned: its execution is stopped, so what is returned
    here goes nowhere; nothing more is recorded and nothing is wrong."""
    logger.info("build ended while planning; the plan is dropped", extra={"buildId": build_id, "status": status})
    return {"requireApproval": False, "taskCount": 0, "remainingSeconds": 1, "superseded": False}


def _result(svc: Services, build: BuildRecord) -> dict[str, Any]:
    elapsed = (svc.clock.now_ms() - build.run_started_at) / 1000
    remaining = max(1, int(svc.settings.build_timeout_seconds - elapsed))
    first_run = build.status == BuildStatus.planning
    wants = build.requireApproval or build.blocked
    return {
        "requireApproval": first_run and wants,
        "taskCount": build.taskCount,
        "remainingSeconds": remaining,
        "superseded": False,
    }


def _keep_plan_cost(svc: Services, build_id: str, usage: Usage) -> None:
    """A plan that ends the build was billed too: keep its cost for the build's metrics."""
    with contextlib.suppress(StateConflict):  # the build moved on: nothing to keep it on
        svc.builds.update(
            build_id,
            Update().set(planUsage=usage.model_dump(), updatedAt=svc.clock.now_ms()).when(
                "{status} = :planning", planning=BuildStatus.planning.value
            ),
        )


def _input_files(svc: Services, build: BuildRecord) -> dict[str, str]:
    return {p: svc.files.get_text(build.buildId, p, kind="input") for p in build.inputFiles}


def _healer(svc: Services, build_id: str, usage: list[Usage]) -> Healer:
    def heal(purpose: str, text: str, error: str, extra: dict[str, Any]) -> str:
        ctx = TaskContext(
            build_id=build_id,
            task_id="plan",
            task_type="heal_json",
            task_name="heal plan",
            deadline_s=svc.settings.task_timeout_seconds,
            spend=Spend(),
        )
        try:
            result = svc.provider.transform(
                TransformKind.heal_json, {"text": text, "error": error, "purpose": purpose, **extra}, ctx
            )
        except ProviderError:
            usage.append(ctx.spend.usage())  # a failed heal was billed all the same
            raise
        usage.append(result.usage)
        return result.text or json.dumps({})

    return heal
