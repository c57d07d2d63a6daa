"""Run one claimed attempt: call the provider within the time left, store the files, and complete it
(taking the dispatcher's step when it can hand dependents over)."""

from __future__ import annotations

from collections.abc import Callable

from shared.dal.table import Update
from shared.dal.vendor_errors import error_code
from shared.errors import NotFound, StateConflict
from shared.logic.attempts import result_cache
from shared.logic.attempts.claim import Claimed
from shared.logic.attempts.concurrency import Slots, call_within
from shared.logic.attempts.context import ReadAhead, sight_of, task_context
from shared.logic.attempts.settle import billed, log_start, observe, settle_failure, tell_dispatcher
from shared.logic.readiness import handoff
from shared.logic.services import Services
from shared.models.events import EventType
from shared.models.messages import TaskMessage
from shared.models.plan import FileInfo, Task, TaskStatus, TaskType, UnsafePathError, Usage, safe_relative_path
from shared.observability import logger
from shared.providers.base import (
    GeneratedFile,
    ProviderError,
    ProviderTimeout,
    Spend,
    TaskContext,
    TransformKind,
    TransformResult,
)

_SAFETY_MARGIN_S = 2.0
_KIND = {TaskType.modify_file: TransformKind.refactor}


def run_attempt(svc: Services, claimed: Claimed, remaining_ms: Callable[[], int], slots: Slots) -> list[Claimed]:
    """Call the provider within the time left, store the files, settle the attempt. Returns the
    dependents the completion handed to this consumer, if any.

    Every attempt is billed, however it ends: its usage (what the provider reported, else an
    estimate) joins what the earlier attempts of this run cost (`msg.spent`), and the run's total
    is what the task reports, what the dispatcher adds to the build's cost and checks against the
    budget."""
    msg, build, task, started = claimed.msg, claimed.build, claimed.task, claimed.started
    settings = svc.settings
    budget_s = min(settings.task_timeout_seconds, max(0.1, remaining_ms() / 1000 - _SAFETY_MARGIN_S))
    spent = msg.spent or Usage()
    spend = Spend()
    log_start(msg.buildId, task, msg.attempt)
    try:
        context, cache_key, result = task_context(
            svc, build, task, msg.attempt, budget_s, spend, claimed.known, claimed.ahead
        )
        claimed.ahead = None
        cached = result is not None
        if result is None:
            result = call_provider(svc, task, context, budget_s)
        infos = store_files(svc, msg.buildId, task, result.files)
    except ProviderTimeout as exc:
        settle_failure(svc, msg, task, str(exc) or "timed out", timed_out=True, started=started,
                       usage=spent, attempt_usage=spend.usage())
        return []
    except (ProviderError, UnsafePathError, ValueError, NotFound) as exc:
        settle_failure(svc, msg, task, str(exc)[:2000] or type(exc).__name__, timed_out=False, started=started,
                       usage=spent, attempt_usage=spend.usage())
        return []

    attempt_usage = Usage() if cached else result.usage
    usage = spent + attempt_usage
    duration = svc.clock.now_ms() - started
    completed = {
        "taskId": task.id,
        "taskName": task.name,
        "filesCreated": len(infos),
        "files": [f.path for f in infos],
        "cached": cached,
        "durationMs": duration,
        "usage": usage.public(),
    }

    def completion() -> Update:
        return (
            billed(Update(), attempt_usage)
            .set(
                status=TaskStatus.completed.value,
                files=[f.model_dump() for f in infos],
                cached=cached,
                usage=usage.model_dump(),
                durationMs=duration,
                completedAt=svc.clock.now_ms(),
                updatedAt=svc.clock.now_ms(),
                error=None,
            )
            .when("{status} = :ip AND {attempt} = :a", ip=TaskStatus.in_progress.value, a=msg.attempt)
        )

    cost = usage.costUsd or 0.0
    # Run a dependent here only if a whole task attempt still fits in this invocation: this thread
    # runs one, and the memory's free slots the others.
    may_run_next = remaining_ms() / 1000 - _SAFETY_MARGIN_S >= settings.task_timeout_seconds
    extra = slots.take(handoff.HANDOFF_LIMIT - 1) if may_run_next else 0
    indexed_at = svc.clock.now_ms()
    # What commits with the completion: the paths (readable once completed) and the result's cache item.
    with_result = svc.file_index.tx_puts(msg.buildId, infos, indexed_at)
    with_result += result_cache.entry(svc, cache_key, result) if cache_key and not cached else []
    # What it wrote, for the dependents this invocation runs: held before the commit, so a sibling
    # whose completion releases one of them (in this invocation) finds it.
    held = claimed.known
    held[task.id] = {info.path: f.content for info, f in zip(infos, result.files, strict=True)}
    _bound_held(held)
    try:
        handed = handoff.complete(
            svc, msg.buildId, task.id, msg.attempt, cost, completed, completion, run_here=1 + extra if may_run_next else 0,
            with_commit=with_result,
        )
        slots.give(extra - max(0, len(handed or []) - 1))
        if handed is None:  # the dispatcher's step to take: the completion alone, then tell it
            svc.events.record(
                msg.buildId,
                EventType.task_completed,
                completed,
                also=[svc.tasks.tx_update(msg.buildId, task.id, completion()), *with_result],
            )
    except StateConflict:
        held.pop(task.id, None)  # settled elsewhere: not what it wrote
        slots.give(extra)
        logger.info("task result discarded: the attempt was settled elsewhere",
                    extra={"taskId": msg.taskId, "attempt": msg.attempt})
        return []
    svc.file_index.put_rest(msg.buildId, infos, indexed_at)
    observe(svc, msg.buildId, task, msg.attempt, "task.cached" if cached else "task.completed", duration, attempt_usage, usage)
    if handed is None:
        tell_dispatcher(svc, msg, "completed", cost)
        return []
    claims = [
        Claimed(TaskMessage(buildId=msg.buildId, taskId=h.task.id, attempt=h.attempt), build, h.task, h.started,
                held)
        for h in handed
    ]
    read_ahead(svc, claims)
    return claims


def read_ahead(svc: Services, claims: list[Claimed]) -> None:
    """The dependents a completion handed to this invocation, whose cache keys are known before any
    read: their contexts' items and cache look-ups in one read (the first would otherwise wait for
    none, the last for every other's), which each uses if it still covers what it reads."""
    sights = [sight_of(svc, c.build, c.task, c.known) for c in claims]
    cache_keys = list(dict.fromkeys(s.early_key for s in sights if s.early_key))
    if len(cache_keys) < 2:
        return  # one read each anyway
    keys = list(dict.fromkeys(k for s in sights if s.early_key for k in s.wanted))
    others = [{"cacheKey": {"S": k}} for k in cache_keys]
    try:
        records, found, cache_items = svc.tasks.get_many_with(keys, svc.settings.cache_table, others)
    except Exception as exc:  # each reads its own then
        logger.warning("read-ahead of the handed tasks' contexts failed", extra={"code": error_code(exc)})
        return
    ahead = ReadAhead(set(keys), records, found, set(cache_keys), {str(i["cacheKey"]): i for i in cache_items})
    for claimed in claims:
        claimed.ahead = ahead


_HELD_BYTES = 32 * 1024 * 1024  # what one invocation keeps of the files its tasks wrote


def _bound_held(held: dict[str, dict[str, str]]) -> None:
    """Forget the oldest tasks' files past _HELD_BYTES (a dependent then reads them back)."""
    size = sum(len(c) for files in list(held.values()) for c in files.values())
    for task_id in list(held):
        if size <= _HELD_BYTES:
            return
        size -= sum(len(c) for c in held.pop(task_id, {}).values())


def store_files(svc: Services, build_id: str, task: Task, files: list[GeneratedFile]) -> list[FileInfo]:
    if not files:
        raise ProviderError("the provider returned no file for this task")
    return [svc.files.put(build_id, safe_relative_path(f.path), f.content, task.id) for f in files]


def call_provider(svc: Services, task: Task, context: TaskContext, budget_s: float) -> TransformResult:
    """The provider's transform for this task, within `budget_s` seconds."""
    kind = _KIND.get(task.type, TransformKind.code_gen)
    payload = {
        "prompt": task.input.prompt or task.description,
        "context": task.input.context,
        "targetPath": task.input.targetPath,
        "description": task.description,
        "name": task.name,
    }
    return call_within(budget_s, context.cancel, svc.provider.transform, kind, payload, context)
