"""What the HTTP API does, over the stores. Owner scoping is enforced here: another user's build
answers NotFound, exactly like a missing one."""

from __future__ import annotations

from typing import Any

from shared import scheduler
from shared.constants import TTL_ATTRIBUTE
from shared.dal.aws import to_item
from shared.dal.table import Update
from shared.errors import Conflict, InvalidInput, NotFound, StateConflict
from shared.ids import new_build_id, now_ms
from shared.logic.finalizing import metrics_of
from shared.logic.services import Services, services
from shared.models.build import (
    TERMINAL_BUILD_STATUSES,
    ApprovalRequest,
    BuildStatus,
    BuildView,
    CreateBuildRequest,
    PlanView,
    TaskView,
)
from shared.models.events import EventType
from shared.models.plan import FileInfo, Task, TaskStatus
from shared.observability import count


def check_webhook_url(url: str, svc: Services) -> None:
    from shared.ssrf import UnsafeWebhookUrl, check_url

    try:
        check_url(url, svc.settings.allowed_hosts)
    except UnsafeWebhookUrl as exc:
        raise InvalidInput(f"webhookUrl: {exc}", details=[{"field": "webhookUrl", "message": str(exc)}]) from None


def create_build(owner: str, req: CreateBuildRequest, svc: Services | None = None) -> dict[str, Any]:
    svc = svc or services()
    if req.webhookUrl:
        check_webhook_url(req.webhookUrl, svc)
    build_id = new_build_id()
    now = now_ms()
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
        TTL_ATTRIBUTE: now // 1000 + svc.settings.record_ttl_seconds,  # with its tasks, events and files
    }
    put = {
        "Put": {
            "TableName": svc.builds.table,
            "Item": to_item(item),
            "ConditionExpression": "attribute_not_exists(buildId)",
        }
    }
    svc.events.record(
        build_id,
        EventType.build_started,
        {"prompt": req.prompt[:200], "framework": req.framework},
        also=[put],
        notify=bool(req.webhookUrl or svc.settings.webhook_url),  # the build item is written in this same call
    )
    try:
        svc.workflow.start(
            build_id,
            {
                "buildId": build_id,
                "timeouts": {
                    "buildSeconds": svc.settings.build_timeout_seconds,
                    "approvalSeconds": svc.settings.plan_approval_timeout_seconds,
                },
            },
        )
    except Exception as exc:
        svc.events.record(
            build_id,
            EventType.build_failed,
            {"reason": "planning_failed", "message": "the build could not be started"},
            also=[
                svc.builds.tx_update(
                    build_id,
                    Update().set(status=BuildStatus.failed.value, failureReason="planning_failed", updatedAt=now_ms()),
                )
            ],
        )
        raise RuntimeError(f"could not start the build's execution: {exc}") from exc
    count("build.started")
    return {
        "buildId": build_id,
        "status": BuildStatus.planning.value,
        "links": {"self": f"/builds/{build_id}", "events": f"/builds/{build_id}/events"},
    }


def list_builds(owner: str, limit: int, cursor: str | None, svc: Services | None = None) -> dict[str, Any]:
    svc = svc or services()
    items, nxt = svc.builds.list_by_owner(owner, limit, cursor)
    return {
        "builds": [
            {
                "buildId": b["buildId"],
                "status": b["status"],
                "prompt": b["prompt"][:200],
                "createdAt": b["createdAt"],
                "updatedAt": b.get("updatedAt", b["createdAt"]),
                "taskCount": b.get("taskCount"),
                "metrics": b.get("metrics"),
            }
            for b in items
        ],
        "next": nxt,
    }


def build_view(owner: str, build_id: str, svc: Services | None = None) -> BuildView:
    svc = svc or services()
    build = svc.builds.get_owned(build_id, owner)
    tasks = svc.tasks.list(build_id)
    running = scheduler.DispatchState.from_json(build.get("dispatch"), [t["taskId"] for t in tasks]).running
    views = []
    for t in tasks:
        task = Task.model_validate(t["task"])
        status = TaskStatus(t["status"])
        if status == TaskStatus.pending and task.id in running:
            status = TaskStatus.queued
        views.append(
            TaskView(
                id=task.id,
                type=task.type.value,
                name=task.name,
                description=task.description,
                dependsOn=task.dependencies,
                targetPath=task.input.targetPath,
                status=status,
                attempt=int(t.get("attempt", 0)),
                cached=bool(t.get("cached")),
                error=t.get("error"),
                files=[f["path"] for f in t.get("files") or []],
            )
        )
    metrics = metrics_of(build, tasks)
    return BuildView(
        buildId=build_id,
        status=build["status"],
        prompt=build["prompt"],
        framework=build.get("framework"),
        createdAt=build["createdAt"],
        updatedAt=build.get("updatedAt", build["createdAt"]),
        plan=PlanView(
            planId=build["planId"],
            estimatedDuration=build.get("estimatedDuration"),
            recovery=build.get("recovery"),
            tasks=views,
        )
        if build.get("planId")
        else None,
        recovery=build.get("recovery"),
        metrics=metrics,
        failureReason=build.get("failureReason"),
        message=build.get("message"),
    )


def list_events(owner: str, build_id: str, after: int, limit: int, svc: Services | None = None) -> dict[str, Any]:
    svc = svc or services()
    svc.builds.get_owned(build_id, owner)
    events, nxt = svc.events.read(build_id, after=after, limit=limit)
    return {"events": [e.model_dump(mode="json") for e in events], "next": nxt}


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


def approve(owner: str, build_id: str, req: ApprovalRequest, svc: Services | None = None) -> dict[str, Any]:
    svc = svc or services()
    build = svc.builds.get_owned(build_id, owner)
    token = build.get("approvalToken")
    if build["status"] != BuildStatus.awaiting_approval or not token:
        raise Conflict(f"build is {build['status']}, not awaiting approval")
    if not req.approved:
        svc.builds.update(build_id, Update().set(approvalToken=None, updatedAt=now_ms()))
        svc.workflow.fail(token, "ApprovalRejected", req.reason or "The plan was rejected.")
        return {"buildId": build_id, "approved": False}
    if req.tasks is not None:
        _replace_plan(svc, build, req.tasks)
    elif build.get("blocked"):
        raise InvalidInput(
            "tasks: this plan has circular dependencies; approve it with an edited task list",
            details=[{"field": "tasks"}],
        )
    svc.builds.update(
        build_id,
        Update()
        .set(approvalToken=None, approvedAt=now_ms(), updatedAt=now_ms())
        .when("{status} = :a", a=BuildStatus.awaiting_approval.value),
    )
    svc.workflow.succeed(token, {"approved": True})
    return {"buildId": build_id, "approved": True}


def _replace_plan(svc: Services, build: dict[str, Any], tasks: list[Task]) -> None:
    from shared import dag
    from shared.plan_validation import validate_edited

    try:
        tasks = validate_edited(tasks)
    except ValueError as exc:
        raise InvalidInput(str(exc), details=[{"field": "tasks", "message": str(exc)}]) from None
    build_id = build["buildId"]
    old = {t["taskId"] for t in svc.tasks.list(build_id)}
    svc.tasks.put_plan(build_id, build["planId"], tasks)
    from shared.dal.aws import client

    for stale in old - {t.id for t in tasks}:
        client("dynamodb").delete_item(TableName=svc.tasks.table, Key=to_item(svc.tasks.key(build_id, stale)))
    estimated = dag.critical_path_length(
        {t.id: t.dependencies for t in tasks}, {t.id: t.estimatedDuration for t in tasks}
    )
    svc.builds.update(
        build_id,
        Update().set(
            taskCount=len(tasks),
            estimatedDuration=estimated,
            blocked=False,
            cycles=None,
            planVersion=int(build.get("planVersion", 0)) + 1,
            updatedAt=now_ms(),
        ),
    )


def cancel(owner: str, build_id: str, reason: str | None = None, svc: Services | None = None) -> dict[str, Any]:
    svc = svc or services()
    build = svc.builds.get_owned(build_id, owner)
    if build["status"] in TERMINAL_BUILD_STATUSES:
        raise Conflict(f"build is already {build['status']}")
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
                        finishedAt=now_ms(),
                        updatedAt=now_ms(),
                    )
                    .when_not_in("status", TERMINAL_BUILD_STATUSES),
                )
            ],
        )
    except StateConflict:
        raise Conflict("build already ended") from None
    svc.workflow.stop(build_id, why)
    if build.get("planId") and build.get("status") == BuildStatus.executing:
        from shared.dal.queues import finished_message, send_batch

        send_batch(
            svc.settings.task_finished_queue_url,
            [finished_message({"kind": "halt", "buildId": build_id, "reason": "cancelled"}, f"halt:{build_id}")],
        )
    count("build.cancelled")
    return {"buildId": build_id, "status": BuildStatus.cancelled.value}


RETRYABLE_TASK_STATUSES = (TaskStatus.failed, TaskStatus.timeout, TaskStatus.skipped)


def retry_task(owner: str, build_id: str, task_id: str, svc: Services | None = None) -> dict[str, Any]:
    """Re-run a failed / timed-out / skipped task and its skipped dependents; the build finishes again."""
    from shared.logic import dispatching

    svc = svc or services()
    build = svc.builds.get_owned(build_id, owner)
    item = svc.tasks.get(build_id, task_id)
    if item is None:
        raise NotFound(f"task {task_id} not found")
    if item.get("status") not in RETRYABLE_TASK_STATUSES:
        raise Conflict(f"task {task_id} is {item.get('status')}; only failed, timed-out or skipped tasks retry")
    status = build["status"]
    if status in (BuildStatus.cancelled, BuildStatus.planning, BuildStatus.awaiting_approval):
        raise Conflict(f"build is {status}; a task can be retried while it executes or once it has ended")
    if not dispatching.reopenable(svc, build, task_id):
        raise Conflict(f"task {task_id} cannot run again while a task it depends on stays failed; retry that one")
    reopen_run = status in TERMINAL_BUILD_STATUSES
    if reopen_run:
        try:
            svc.builds.update(
                build_id,
                Update()
                .set(
                    status=BuildStatus.executing.value,
                    runStartedAt=now_ms(),  # the re-opened run gets its own BUILD_TIMEOUT_SECONDS
                    executeStartedAt=None,
                    deadlineAt=None,
                    finishedAt=None,
                    failureReason=None,
                    message=None,
                    runs=int(build.get("runs", 1)) + 1,
                    updatedAt=now_ms(),
                )
                .when("{status} = :s", s=status),
            )
        except StateConflict:
            raise Conflict("build changed while retrying; try again") from None
    dispatching.retry_task(build_id, task_id, svc)
    if reopen_run:
        run = int(build.get("runs", 1)) + 1
        svc.workflow.start(
            f"{build_id}-run{run}",
            {
                "buildId": build_id,
                "timeouts": {
                    "buildSeconds": svc.settings.build_timeout_seconds,
                    "approvalSeconds": svc.settings.plan_approval_timeout_seconds,
                },
            },
        )
    count("task.retry_requested")
    return {"buildId": build_id, "taskId": task_id, "status": "queued"}
