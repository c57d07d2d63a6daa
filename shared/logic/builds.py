"""What the HTTP API does, over the stores. Owner scoping is enforced here: another user's build
answers NotFound, exactly like a missing one."""

from __future__ import annotations

import contextlib
from typing import Any

from pydantic import BaseModel

from shared.constants import TTL_ATTRIBUTE
from shared.dal.table import Update
from shared.errors import Conflict, InvalidInput, NotFound, StateConflict
from shared.ids import new_build_id
from shared.logic import runs
from shared.logic.finalizing import metrics_of
from shared.logic.readiness import scheduler
from shared.logic.services import Services, services
from shared.models.api import (
    ApprovalResult,
    BuildCreated,
    BuildList,
    BuildSummary,
    CancelResult,
    EventPage,
    TaskActionResult,
)
from shared.models.build import (
    TERMINAL_BUILD_STATUSES,
    ApprovalRequest,
    BuildStatus,
    BuildView,
    CreateBuildRequest,
    EditedTask,
    PlanView,
    TaskView,
)
from shared.models.events import EventType, PlanGeneratedData, PlannedTask
from shared.models.messages import HaltBuild
from shared.models.plan import (
    RETRYABLE_TASK_STATUSES,
    SKIPPABLE_TASK_STATUSES,
    FileInfo,
    Task,
    TaskStatus,
)
from shared.models.records import BuildRecord, TaskRecord
from shared.observability import count, logger


def check_webhook_url(url: str, svc: Services) -> None:
    from shared.ssrf import UnsafeWebhookUrl, check_url

    try:
        check_url(url, svc.settings.allowed_hosts)
    except UnsafeWebhookUrl as exc:
        raise InvalidInput(f"webhookUrl: {exc}", details=[{"field": "webhookUrl", "message": str(exc)}]) from None


def create_build(owner: str, req: CreateBuildRequest, svc: Services | None = None) -> BuildCreated:
    svc = svc or services()
    if req.webhookUrl:
        check_webhook_url(req.webhookUrl, svc)
    build_id = new_build_id()
    svc.events.begin(build_id)  # a new build's log is empty: its first event is seq 1, no read needed
    now = svc.clock.now_ms()
    for f in req.files:
        svc.files.put(build_id, f.path, f.content, "input", kind="input")
    require_approval = svc.settings.require_plan_approval if req.requireApproval is None else req.requireApproval
    item = {
        "buildId": build_id,
        "ownerId": owner,
        "status": BuildStatus.planning.value,
        "prompt": req.prompt,
        "framework": req.framework,
        "webhookUrl": req.webhookUrl,
        "requireApproval": require_approval,
        "budgetUsd": req.budgetUsd,
        "maxConcurrency": req.maxConcurrency,
        "createdAt": now,
        "updatedAt": now,
        "inputFiles": [f.path for f in req.files] or None,
        "runId": runs.first_run(build_id),
        TTL_ATTRIBUTE: now // 1000 + svc.settings.record_ttl_seconds,  # with its tasks, events and files
    }
    # The execution starts first and the build item commits after it (runs.py): an API call that
    # dies between the two leaves an execution that ends at its Plan step, never a build that waits
    # for an execution nobody started.
    try:
        svc.workflow.start(runs.first_run(build_id), _run_input(svc, build_id))
    except Exception as exc:
        raise RuntimeError(f"could not start the build's execution: {exc}") from exc
    svc.events.record(
        build_id,
        EventType.build_started,
        {"prompt": req.prompt[:200], "framework": req.framework},
        also=[svc.builds.tx_create(item)],
        notify=bool(req.webhookUrl or svc.settings.webhook_url),  # the build item is written in this same call
    )
    count("build.started")
    return BuildCreated.model_validate(
        {"buildId": build_id, "links": {"self": f"/builds/{build_id}", "events": f"/builds/{build_id}/events"}}
    )


def list_builds(owner: str, limit: int, cursor: str | None, svc: Services | None = None) -> BuildList:
    svc = svc or services()
    items, nxt = svc.builds.list_by_owner(owner, limit, cursor)
    return BuildList(
        builds=[
            BuildSummary(
                buildId=b.buildId,
                status=b.status,
                prompt=b.prompt[:200],
                createdAt=b.createdAt,
                updatedAt=b.updatedAt or b.createdAt,
                taskCount=b.taskCount,
                metrics=b.metrics,
            )
            for b in items
        ],
        next=nxt,
    )


# What a build's page shows of each task and what its metrics add up: not the task's prompt and
# context (up to 8,000 characters each) nor the engine's bookkeeping on the item.
VIEW_ATTRIBUTES = (
    "taskId",
    "task.type",
    "task.name",
    "task.description",
    "task.estimatedDuration",
    "task.input.targetPath",
    "task.input.dependencies",
    "status",
    "attempt",
    "startedAt",
    "completedAt",
    "durationMs",
    "usage",
    "cached",
    "skippedBecause",
    "error",
    "files",
    "spentUsd",
    "spentPromptTokens",
    "spentCompletionTokens",
    "spentUnpriced",
    "streamOrder",
)


def build_view(owner: str, build_id: str, svc: Services | None = None) -> BuildView:
    """The build with each task's run state: the build item and one Query of the tasks' shown
    attributes (their definitions were validated when the plan was stored)."""
    svc = svc or services()
    build = svc.builds.get_owned(build_id, owner)
    tasks = svc.tasks.list(build_id, attributes=VIEW_ATTRIBUTES)
    from shared.logic.readiness.dispatch_state import dispatched_items

    # while the plan streams, the dispatch state is written over the tasks handed so far
    order = [t.taskId for t in dispatched_items(build, tasks)]
    running = scheduler.DispatchState.from_json(build.dispatch, order).running
    views = []
    for t in tasks:
        task, status = t.task, t.status
        if status == TaskStatus.pending and t.taskId in running:
            status = TaskStatus.queued
        views.append(
            TaskView(
                id=t.taskId,
                type=task.type,
                name=task.name,
                description=task.description,
                estimatedDuration=task.estimatedDuration,
                dependsOn=task.dependencies,
                targetPath=task.input.targetPath,
                status=status,
                attempt=t.attempt,
                startedAt=t.startedAt,
                completedAt=t.completedAt,
                durationMs=t.durationMs,
                usage=t.usage.public() if t.usage else None,
                cached=t.cached,
                skipReason=_skip_reason(t) if status == TaskStatus.skipped else None,
                error=t.error,
                files=[f.path for f in t.files],
            )
        )
    metrics = metrics_of(build, tasks, svc.clock.now_ms())
    return BuildView(
        buildId=build_id,
        status=build.status,
        prompt=build.prompt,
        framework=build.framework,
        createdAt=build.createdAt,
        updatedAt=build.updatedAt or build.createdAt,
        startedAt=build.executeStartedAt,
        estimatedDuration=build.estimatedDuration,
        planVersion=build.planVersion,
        plan=PlanView(
            planId=build.planId,
            estimatedDuration=build.estimatedDuration,
            recovery=build.recovery,
            tasks=views,
        )
        if build.planId
        else None,
        recovery=build.recovery,
        metrics=metrics,
        failureReason=build.failureReason,
        message=build.message,
    )


def _streamed(svc: Services, build_id: str) -> bool:
    """Whether the build's plan step handed tasks to its dispatch state while the plan streamed (read
    now, after a cancel committed: no task is handed after it)."""
    build = svc.builds.get(build_id, attributes=["streamedTasks"])
    return build is not None and build.streamedTasks is not None


def _skip_reason(item: TaskRecord) -> str:
    return "user" if item.skippedBecause == "user" else "dependency_failed"


MAX_WAIT_SECONDS = 20.0


def list_events(
    owner: str, build_id: str, after: int, limit: int, wait: float = 0.0, svc: Services | None = None
) -> EventPage:
    """The events after `after`; with `wait`, an empty answer is held until one is recorded (then
    answered at once) or `wait` seconds pass."""
    svc = svc or services()
    svc.builds.get_owned(build_id, owner)
    events, nxt = svc.events.read(build_id, after=after, limit=limit)
    if not events and wait > 0 and svc.events.wait_for(build_id, after, min(wait, MAX_WAIT_SECONDS)):
        events, nxt = svc.events.read(build_id, after=after, limit=limit)
    return EventPage(events=events, next=nxt)


def list_files(owner: str, build_id: str, svc: Services | None = None) -> list[FileInfo]:
    """The build's files: for each path, the version its last completed writer left (one index
    item per path, read in path order)."""
    svc = svc or services()
    svc.builds.get_owned(build_id, owner)
    return svc.file_index.list(build_id)


def get_file(owner: str, build_id: str, path: str, svc: Services | None = None) -> bytes:
    svc = svc or services()
    svc.builds.get_owned(build_id, owner)
    from shared.models.plan import UnsafePathError, safe_relative_path

    try:
        clean = safe_relative_path(path)
    except UnsafePathError:
        raise NotFound(f"file {path} not found") from None
    if svc.file_index.get(build_id, clean) is None:  # written by no completed task
        raise NotFound(f"file {path} not found")
    return svc.files.get(build_id, clean)


def approve(owner: str, build_id: str, req: ApprovalRequest, svc: Services | None = None) -> ApprovalResult:
    """Approve, reject, or approve an edited plan. The decision is taken once: its event commits with
    the decision on the build, so of two concurrent decisions exactly one wins and the other answers
    409; an edited plan is stored only by the winner. The decision is then carried out (the edit
    stored, the approval step's token answered); a call that dies part way leaves the decision on the
    build, and the next approval request carries it out (`_carry_out`)."""
    svc = svc or services()
    build = svc.builds.get_owned(build_id, owner)
    token = build.approvalToken
    if build.status != BuildStatus.awaiting_approval or not token:
        raise Conflict(f"build is {build.status}, not awaiting approval")
    if build.approvalDecision:
        return _carry_out(svc, build, token, req)
    plan_id = str(build.planId)
    version = build.planVersion or 1
    edited: list[Task] | None = None
    if req.approved and req.tasks is not None:
        edited = _validated_edit(req.tasks)
    elif req.approved and build.blocked:
        raise InvalidInput(
            "tasks: this plan has circular dependencies; approve it with an edited task list",
            details=[{"field": "tasks", "message": "an acyclic task list is required"}],
        )
    now = svc.clock.now_ms()
    decided = (
        Update()
        .set(approvalDecision="approved" if req.approved else "rejected", decidedAt=now, updatedAt=now)
        .when(
            "{status} = :a AND {approvalToken} = :tok AND attribute_not_exists({approvalDecision})",
            a=BuildStatus.awaiting_approval.value,
            tok=token,
        )
    )
    if not req.approved:
        reason = req.reason or "The plan was rejected."
        _decide(svc, build_id, EventType.plan_rejected, {"planId": plan_id, "reason": reason}, decided.set(approvalReason=reason))
        svc.workflow.fail(token, "ApprovalRejected", reason)
        count("plan.rejected")
        return ApprovalResult(buildId=build_id, approved=False)
    if edited is not None:
        version += 1
        decided.set(planVersion=version, approvalEdit=True)
    decided.set(approvedAt=now)
    _decide(
        svc,
        build_id,
        EventType.plan_approved,
        {"planId": plan_id, "planVersion": version, "edited": edited is not None},
        decided,
    )
    if edited is not None:
        _replace_plan(svc, build, edited, version)
    svc.workflow.succeed(token, {"approved": True})
    return ApprovalResult(buildId=build_id, approved=True, planVersion=version)


def _carry_out(svc: Services, build: BuildRecord, token: str, req: ApprovalRequest) -> ApprovalResult:
    """The plan was approved or rejected, and the approval step still waits: the call that decided
    may still be carrying it out, or may have died part way. Its token is answered again (answering
    twice is harmless). An approved edit whose plan is not stored yet is stored first, from this
    request's tasks, once the deciding call is surely over (past the API's time limit); until then,
    or without tasks, this answers 409 and changes nothing."""
    build_id = build.buildId
    version = build.planVersion or 1
    if build.approvalDecision == "rejected":
        svc.workflow.fail(token, "ApprovalRejected", build.approvalReason or "The plan was rejected.")
        raise Conflict("the plan was already rejected")
    if build.approvalEdit and (build.planStoredVersion or 1) < version:
        over = svc.clock.now_ms() - (build.decidedAt or 0) > runs.commit_wait_s() * 1000
        if not (over and req.approved and req.tasks is not None):
            raise Conflict("the plan was approved with an edit that is still being stored; send the approval again in a minute")
        _replace_plan(svc, build, _validated_edit(req.tasks), version)
        svc.workflow.succeed(token, {"approved": True})
        return ApprovalResult(buildId=build_id, approved=True, planVersion=version)
    svc.workflow.succeed(token, {"approved": True})
    raise Conflict("the plan was already approved")


def _decide(svc: Services, build_id: str, event: EventType, data: dict[str, Any], update: Update) -> None:
    try:
        svc.events.record(build_id, event, data, also=[svc.builds.tx_update(build_id, update)])
    except StateConflict:
        raise Conflict("the plan was already approved or rejected, or the build moved on") from None


def _validated_edit(tasks: list[EditedTask]) -> list[Task]:
    from shared.logic.readiness.plan_validation import validate_edited

    try:
        return validate_edited([Task.model_validate(t.model_dump()) for t in tasks])
    except ValueError as exc:
        raise InvalidInput(str(exc), details=[{"field": "tasks", "message": str(exc)}]) from None


def _replace_plan(svc: Services, build: BuildRecord, tasks: list[Task], version: int) -> None:
    """Store the approved edit as the plan and announce it (`plan_generated` with its new version)."""
    from shared.logic.readiness import dag

    build_id, plan_id = build.buildId, str(build.planId)
    old = {t.taskId for t in svc.tasks.list(build_id)}
    svc.tasks.put_plan(build_id, plan_id, tasks)
    for stale in old - {t.id for t in tasks}:
        svc.tasks.delete(build_id, stale)
    estimated = dag.critical_path_length(
        {t.id: t.dependencies for t in tasks}, {t.id: t.estimatedDuration for t in tasks}
    )
    data = PlanGeneratedData(
        planId=plan_id,
        planVersion=version,
        taskCount=len(tasks),
        estimatedDuration=estimated,
        recovery=build.recovery,
        tasks=[PlannedTask.model_validate(t.planned()) for t in tasks],
    )
    svc.events.record(
        build_id,
        EventType.plan_generated,
        data,
        also=[
            svc.builds.tx_update(
                build_id,
                Update().set(
                    planStoredVersion=version,  # the edit is stored: the approval can be answered
                    taskCount=len(tasks),
                    estimatedDuration=estimated,
                    blocked=False,
                    cycles=None,
                    updatedAt=svc.clock.now_ms(),
                ),
            )
        ],
    )


def cancel(owner: str, build_id: str, reason: str | None = None, svc: Services | None = None) -> CancelResult:
    svc = svc or services()
    build = svc.builds.get_owned(build_id, owner)
    if build.status in TERMINAL_BUILD_STATUSES:
        raise Conflict(f"build is already {build.status}")
    why = reason or "cancelled by the user"
    try:
        svc.events.record(
            build_id,
            EventType.build_cancelled,
            {"reason": why},
            also=[
                svc.builds.tx_update(
                    build_id,
                    Update()
                    .set(
                        status=BuildStatus.cancelled.value,
                        approvalToken=None,
                        finishedAt=svc.clock.now_ms(),
                        updatedAt=svc.clock.now_ms(),
                    )
                    .when_not_in("status", TERMINAL_BUILD_STATUSES),
                )
            ],
        )
    except StateConflict:
        raise Conflict("build already ended") from None
    # The cancel is recorded: a run that is not stopped here still ends on its own, since each of its
    # steps checks the build's status first. Runs before the current one have ended.
    try:
        svc.workflow.stop(runs.current_run(build), why)
    except Exception as exc:
        logger.warning("could not stop the build's execution", extra={"error": str(exc)[:300]})
    # A build with a dispatch state (its plan stored, or tasks started while it streamed, which is
    # read after the cancel committed: no task is handed after it) halts it: nothing more starts.
    if build.planId or _streamed(svc, build_id):
        from shared.dal.queues import finished_message, send_batch

        send_batch(
            svc.settings.task_finished_queue_url,
            [finished_message(HaltBuild(buildId=build_id, reason="cancelled"), f"halt:{build_id}")],
        )
    count("build.cancelled")
    return CancelResult(buildId=build_id)


_RUN_END_WAIT_S = 10.0


def _run_input(svc: Services, build_id: str) -> dict[str, Any]:
    """A run's execution input; `requestedAt` bounds how long its Plan step waits for its commit."""
    return {
        "buildId": build_id,
        "requestedAt": svc.clock.now_ms(),
        "timeouts": {
            "buildSeconds": svc.settings.build_timeout_seconds,
            "approvalSeconds": svc.settings.plan_approval_timeout_seconds,
        },
    }


def retry_task(owner: str, build_id: str, task_id: str, svc: Services | None = None) -> TaskActionResult:
    """Re-run a failed / timed-out / skipped task (or one a time limit or budget halt cancelled) and
    its skipped dependents; a build that had ended runs again (`build_resumed`) and ends again."""
    return _task_action(owner, build_id, task_id, "retry", svc or services())


def skip_task(owner: str, build_id: str, task_id: str, svc: Services | None = None) -> TaskActionResult:
    """Give up on a failed / timed-out task: it becomes `skipped` (reason user) and its dependents run
    without its output; a build that had ended runs again (`build_resumed`)."""
    return _task_action(owner, build_id, task_id, "skip", svc or services())


def _task_action(owner: str, build_id: str, task_id: str, action: str, svc: Services) -> TaskActionResult:
    from shared.logic.readiness import reopen

    build = svc.builds.get_owned(build_id, owner)
    item = svc.tasks.get(build_id, task_id)
    if item is None:
        raise NotFound(f"task {task_id} not found")
    allowed = RETRYABLE_TASK_STATUSES if action == "retry" else SKIPPABLE_TASK_STATUSES
    if item.status not in allowed:
        raise Conflict(
            f"task {task_id} is {item.status}; only "
            + ("failed, timed-out, skipped or cancelled tasks retry" if action == "retry" else "failed or timed-out tasks can be skipped")
        )
    if item.status == TaskStatus.cancelled and build.status == BuildStatus.executing:
        raise Conflict(f"task {task_id} was cancelled; it can be retried once the build has ended")
    if not build.planId:  # its plan failed after tasks started while it streamed: no plan to run
        raise Conflict(f"build {build_id} has no plan; a task can be {action}ped only in a planned build")
    act = reopen.reopen_task if action == "retry" else reopen.skip_failed_task
    deadline = svc.clock.monotonic() + _RUN_END_WAIT_S
    while True:
        status = build.status
        if status in (BuildStatus.cancelled, BuildStatus.planning, BuildStatus.awaiting_approval):
            raise Conflict(f"build is {status}; a task can be {action}ped while it executes or once it has ended")
        if status == BuildStatus.executing:
            try:
                reopened = act(build_id, task_id, svc, in_run=True)
                return _acted(build_id, task_id, action, reopened, resumed=False)
            except (reopen.RunEnding, reopen.NotSettled):
                # The run settled its last task and Finalize is recording its end: wait for that
                # end, then re-open the build (the request is never lost in between). Or the task's
                # attempt ended and the dispatcher is taking that step: wait for it.
                if svc.clock.monotonic() > deadline:
                    raise Conflict("the build is finishing its run; try again in a moment") from None
                svc.clock.sleep(0.1)
                build = svc.builds.get_owned(build_id, owner)
                continue
        return _resume(svc, build, task_id, action)


def _resume(svc: Services, build: BuildRecord, task_id: str, action: str) -> TaskActionResult:
    """Re-open a build that had ended. The new run's execution starts first, under a name never used
    before; then one transaction commits `build_resumed` with that name as the build's run, its
    return to `executing`, and the dispatch state with the task re-opened (for a skip, with its
    `task_skipped`), on condition that the build is as it was read. Only then are the re-opened
    tasks' items made pending and the ready ones sent; the run's Execute step does both again if
    this call dies first. An execution whose commit never lands ends at its Plan step (runs.py)."""
    from shared.logic.readiness import dispatch_state, reopen

    build_id = build.buildId
    run = build.runs + 1
    now = svc.clock.now_ms()
    # the re-opened run gets its own BUILD_TIMEOUT_SECONDS
    resumed = build.model_copy(update={"status": BuildStatus.executing, "deadlineAt": None, "runStartedAt": now})
    cur = dispatch_state.dispatch_state_of(svc, resumed)
    if action == "retry":
        reopened = scheduler.retry(cur.spec, cur.state, task_id, build.maxConcurrency)
        if not reopened:
            raise Conflict(f"task {task_id} cannot run again while a task it depends on stays failed; retry that one")
        task_ids = reopened
    else:
        skipped = scheduler.skip(cur.spec, cur.state, task_id, build.maxConcurrency)
        if skipped is None:
            raise Conflict(f"task {task_id} is not failed; only failed or timed-out tasks can be skipped")
        reopened, task_ids = skipped, [task_id, *skipped]
    decision = dispatch_state.decide(cur, lambda spec, st, m: scheduler.fill(spec, st, m))
    if cur.state.halted is not None:  # its budget is spent: the run would end before it began
        raise Conflict(f"build {build_id} has spent its budget; a task can no longer run in it")
    execution = runs.new_run(build_id, run)
    svc.workflow.start(execution, _run_input(svc, build_id))
    update = (
        dispatch_state.state_update(cur)
        .set(
            status=BuildStatus.executing.value,
            runStartedAt=now,
            executeStartedAt=None,
            executeToken=None,
            deadlineAt=None,
            finishedAt=None,
            failureReason=None,
            message=None,
            runs=run,
            runId=execution,
        )
        .when("{status} = :s", s=build.status.value)
    )
    if decision.sends:
        update.set(stepVersion=cur.version + 1)  # confirmed by sentVersion once they are sent
    entries: list[tuple[EventType, BaseModel | dict[str, Any]]] = [(EventType.build_resumed, {"runId": execution, "taskIds": task_ids})]
    also = [svc.builds.tx_update(build_id, update)]
    if action == "skip":
        entries.append((EventType.task_skipped, {"taskId": task_id, "reason": "user"}))
        also.append(
            svc.tasks.tx_update(
                build_id,
                task_id,
                Update()
                .set(status=TaskStatus.skipped.value, skippedBecause="user", updatedAt=now)
                .when_in("status", SKIPPABLE_TASK_STATUSES),
            )
        )
    dispatch_state.forget_commit(build_id)
    try:
        svc.events.record_many(build_id, entries, also=also)
    except StateConflict:
        with contextlib.suppress(Exception):  # it ends at its Plan step all the same
            svc.workflow.stop(execution, "superseded: the build changed while it was re-opened")
        raise Conflict("build changed while re-opening it; try again") from None
    reopen.reopen_items(svc, build_id)
    if decision.sends:
        dispatch_state.send_tasks(svc, build_id, decision.sends, dispatch_state.plan(svc, cur.build)[1])
        dispatch_state.confirm_sent(svc, build_id, cur.version + 1)
    count("build.resumed")
    return _acted(build_id, task_id, action, reopened, resumed=True)


def _acted(build_id: str, task_id: str, action: str, reopened: list[str], *, resumed: bool) -> TaskActionResult:
    count(f"task.{action}_requested")
    return TaskActionResult(
        buildId=build_id,
        taskId=task_id,
        status=TaskStatus.queued if action == "retry" else TaskStatus.skipped,
        reopened=reopened,
        buildResumed=resumed,
    )
