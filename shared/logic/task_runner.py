"""Run one task attempt: claim it, call the provider within the time left, store its files, report.

Every step can be replayed. The claim (`in_progress`, attempt N) commits with `task_started`; the
result commits with `task_completed` / `task_failed` / `task_timeout`; then the dispatcher is told
through the task-finished queue. A redelivered message whose attempt is already settled re-sends
what the settled state implies (the dispatcher and this consumer both ignore duplicates).
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import json
import logging
import math
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from typing import Any

from aws_lambda_powertools.metrics import MetricUnit

from shared import limits
from shared.backoff import exponential_backoff_s
from shared.constants import TTL_ATTRIBUTE
from shared.dal.queues import finished_message, send_batch, task_message
from shared.dal.table import Update, transact
from shared.dal.vendor_errors import error_code
from shared.errors import NotFound, StateConflict
from shared.logic.readiness import dispatching, handoff
from shared.logic.services import Services, services
from shared.models.build import TERMINAL_BUILD_STATUSES
from shared.models.events import EventType
from shared.models.messages import Outcome, TaskFinished, TaskMessage
from shared.models.plan import (
    FAILED_TASK_STATUSES,
    UNSTARTED_TASK_STATUSES,
    FileInfo,
    Task,
    TaskStatus,
    TaskType,
    UnsafePathError,
    Usage,
    safe_relative_path,
)
from shared.observability import count, emit, fingerprint, logger
from shared.providers.base import (
    GeneratedFile,
    ProviderError,
    ProviderTimeout,
    Spend,
    TaskContext,
    TransformKind,
    TransformResult,
)
from shared.providers.prompts import TEMPLATES_VERSION

_SAFETY_MARGIN_S = 2.0
RETRY_DELAY_CAP_S = 900.0  # a retry is a delayed message: SQS delays one by 15 minutes at most
# What a task needs of its build: never the dispatch state, which grows with the build's size.
_BUILD_FIELDS = ["buildId", "status", "haltedBy", "prompt", "framework", "inputFiles"]
_STATIC_BUILD_FIELDS = ("buildId", "prompt", "framework", "inputFiles")
_static_fields: dict[str, dict[str, Any]] = {}  # per process: buildId -> its _STATIC_BUILD_FIELDS
_static_lock = threading.Lock()
_uploads: dict[str, dict[str, str]] = {}  # per process: buildId -> its uploaded files (never change)
# One thread per provider call in flight (made as needed): handed tasks run side by side, and a call
# waiting for a free thread would spend its own time limit waiting.
_pool = ThreadPoolExecutor(max_workers=256, thread_name_prefix="provider")


_KIND = {TaskType.modify_file: TransformKind.refactor}


@dataclass
class Claimed:
    """An attempt this consumer holds: its claim committed with `task_started`."""

    msg: TaskMessage
    build: dict[str, Any]  # _STATIC_BUILD_FIELDS
    task: Task
    started: int
    # What this invocation already holds of the build's files: what each task it completed wrote
    # (task id -> path -> content), shared by every attempt it runs, so none reads them back.
    known: dict[str, dict[str, str]] = field(default_factory=dict)
    ahead: ReadAhead | None = None  # what one read for the dependents handed with it fetched


class ClaimsFirst:
    """Where one process runs many task consumers (the local runtime), a consumer that holds its
    claim lets the claims in progress beside it commit before it starts its work: starting a ready
    task comes before advancing a started one. With one consumer per process (Lambda) nobody
    else is ever claiming and nothing waits."""

    def __init__(self, max_wait_s: float = 0.05) -> None:
        self.max_wait_s = max_wait_s
        self._cond = threading.Condition()
        self._claiming = 0

    @contextlib.contextmanager
    def claiming(self) -> Iterator[None]:
        with self._cond:
            self._claiming += 1
        try:
            yield
        finally:
            with self._cond:
                self._claiming -= 1
                if not self._claiming:
                    self._cond.notify_all()

    def wait(self) -> None:
        with self._cond:
            self._cond.wait_for(lambda: self._claiming == 0, timeout=self.max_wait_s)


_claims_first = ClaimsFirst()


class Slots:
    """How many more tasks an invocation may run beside those it runs: its memory's bound
    (`limits.concurrent_tasks`). The task that brought the message holds one slot."""

    def __init__(self, total: int) -> None:
        self._free = max(0, total - 1)
        self._lock = threading.Lock()

    def take(self, n: int) -> int:
        with self._lock:
            k = max(0, min(n, self._free))
            self._free -= k
            return k

    def give(self, n: int) -> None:
        with self._lock:
            self._free += n


def run_task(
    msg: TaskMessage, remaining_ms: Callable[[], int], svc: Services | None = None, *, memory_mb: int | None = None
) -> None:
    """Run the attempt `msg` names (or the dead attempts its message watches), then each dependent
    its completion hands to this consumer, at most as many at once as the memory allows."""
    svc = svc or services()
    slots = Slots(limits.concurrent_tasks(memory_mb or limits.FUNCTION_MEMORY_MB["task"]))
    with _claims_first.claiming():
        claimed = _claim(svc, msg)
    if claimed:  # dead attempts adopted together were handed together: the memory held them then
        slots.take(len(claimed) - 1)
        _run_all(svc, claimed, remaining_ms, slots)


def _beside(target: Callable[..., None], *args: Any, name: str) -> threading.Thread:
    """A thread of this invocation (it carries the invocation's context, as a Lambda's threads do)."""
    thread = threading.Thread(target=contextvars.copy_context().run, args=(target, *args), name=name, daemon=True)
    thread.start()
    return thread


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
            threads.append(_beside(beside, claimed, name=f"task-{claimed.task.id}"))
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
            _claims_first.wait()
            handed = _run(svc, current, remaining_ms, slots)
            current = handed[0] if handed else None
            for claimed in handed[1:]:
                threads.append(_beside(beside, claimed, name=f"task-{claimed.task.id}"))
    finally:
        slots.give(1)


def _claim(svc: Services, msg: TaskMessage) -> list[Claimed]:
    """Take the attempt: `in_progress` and `task_started` in one commit, only while the build runs.
    If it was taken already, do what its state implies (`_replay`), which may hand back dead
    attempts this message watches, to run again here.

    A message that carries its task's definition, for a build this process has seen, goes straight
    to that commit; its conditions decide what a read would have."""
    build = _static_fields.get(msg.buildId)
    task = Task.model_validate(msg.task) if msg.task else None
    if build is None or task is None:
        fresh = svc.builds.get(msg.buildId, attributes=_BUILD_FIELDS)
        # A message carrying its definition needs no read of the task: the claim's conditions decide.
        item = svc.tasks.get(msg.buildId, msg.taskId) if task is None else None
        if task is None and item is not None:
            task = Task.model_validate(item["task"])
        if fresh is None or task is None:
            logger.warning("task message for a missing build or task dropped", extra=msg.model_dump(exclude={"task"}))
            return []
        if _stopped(fresh):
            return _replay(svc, msg, task, current=item, halted=True)
        build = _remember_build(fresh)
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
        fresh = svc.builds.get(msg.buildId, attributes=_BUILD_FIELDS)
        if fresh is None:
            return []
        return _replay(svc, msg, task, halted=_stopped(fresh))  # it ended or halted: start nothing
    return [Claimed(msg, build, task, started)]


def _remember_build(build: dict[str, Any]) -> dict[str, Any]:
    """Keep what a task needs of its build and never changes (not its status)."""
    static = {k: build.get(k) for k in _STATIC_BUILD_FIELDS}
    with _static_lock:
        if len(_static_fields) > 1024:
            _static_fields.clear()
        _static_fields[str(build["buildId"])] = static
    return static


def _run(svc: Services, claimed: Claimed, remaining_ms: Callable[[], int], slots: Slots) -> list[Claimed]:
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
    _log_start(msg.buildId, task, msg.attempt)
    try:
        context, cache_key, result = _context(
            svc, build, task, msg.attempt, budget_s, spend, claimed.known, claimed.ahead
        )
        claimed.ahead = None
        cached = result is not None
        if result is None:
            result = _call_with_timeout(svc, task, context, budget_s)
        infos = _store_files(svc, msg.buildId, task, result.files)
    except ProviderTimeout as exc:
        _settle_failure(svc, msg, task, str(exc) or "timed out", timed_out=True, started=started,
                        usage=spent, attempt_usage=spend.usage())
        return []
    except (ProviderError, UnsafePathError, ValueError, NotFound) as exc:
        _settle_failure(svc, msg, task, str(exc)[:2000] or type(exc).__name__, timed_out=False, started=started,
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
            _billed(Update(), attempt_usage)
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
    with_result += _cache_entry(svc, cache_key, result) if cache_key and not cached else []
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
    _observe(svc, msg.buildId, task, msg.attempt, "task.cached" if cached else "task.completed", duration, attempt_usage, usage)
    if handed is None:
        _tell_dispatcher(svc, msg, "completed", cost)
        return []
    claims = [
        Claimed(TaskMessage(buildId=msg.buildId, taskId=h.task.id, attempt=h.attempt), build, h.task, h.started,
                held)
        for h in handed
    ]
    _read_ahead(svc, claims)
    return claims


_HELD_BYTES = 32 * 1024 * 1024  # what one invocation keeps of the files its tasks wrote


def _bound_held(held: dict[str, dict[str, str]]) -> None:
    """Forget the oldest tasks' files past _HELD_BYTES (a dependent then reads them back)."""
    size = sum(len(c) for files in list(held.values()) for c in files.values())
    for task_id in list(held):
        if size <= _HELD_BYTES:
            return
        size -= sum(len(c) for c in held.pop(task_id, {}).values())


def _billed(update: Update, attempt: Usage) -> Update:
    """Add one attempt's usage to the task's running totals (every attempt of every run), which the
    build's metrics sum. Commits with the attempt's settle, whose condition makes it count once."""
    update.add(
        spentUsd=attempt.costUsd or 0.0,
        spentPromptTokens=attempt.promptTokens,
        spentCompletionTokens=attempt.completionTokens,
    )
    if attempt.costUsd is None:
        update.set(spentUnpriced=True)
    if attempt.estimated:
        update.set(spentEstimated=True)
    return update


def _log_start(build_id: str, task: Task, attempt: int) -> None:
    # buildId named on the line itself: handed tasks run in threads beside others of the same process.
    logger.info("task.start", extra={"buildId": build_id, "taskId": task.id, "taskType": task.type.value,
                                     "attempt": attempt})
    emit([("task.started", 1, MetricUnit.Count)], taskType=task.type.value)


def _observe(
    svc: Services,
    build_id: str,
    task: Task,
    attempt: int,
    outcome: str,
    duration_ms: int,
    attempt_usage: Usage,
    usage: Usage,
    error: str | None = None,
) -> None:
    """The attempt's log line (`task.complete` / `task.error`) and metrics (per task type, per provider)."""
    line = {
        "buildId": build_id,
        "taskId": task.id,
        "taskType": task.type.value,
        "attempt": attempt,
        "outcome": outcome.removeprefix("task."),
        "durationMs": duration_ms,
        "tokens": {"prompt": attempt_usage.promptTokens, "completion": attempt_usage.completionTokens},
        "costUsd": attempt_usage.costUsd,
        "estimated": attempt_usage.estimated,
        "taskCostUsd": usage.costUsd,
    }
    if error is None:
        logger.info("task.complete", extra=line)
    else:
        logger.warning("task.error", extra={**line, "error": error})
    emit(
        [
            (outcome, 1, MetricUnit.Count),
            ("task.duration_ms", duration_ms, MetricUnit.Milliseconds),
            ("task.cost_usd", attempt_usage.costUsd or 0.0, MetricUnit.NoUnit),
        ],
        taskType=task.type.value,
    )
    if attempt_usage.promptTokens or attempt_usage.completionTokens or attempt_usage.costUsd:
        emit(
            [
                ("tokens.prompt", attempt_usage.promptTokens, MetricUnit.Count),
                ("tokens.completion", attempt_usage.completionTokens, MetricUnit.Count),
                ("cost.usd", attempt_usage.costUsd or 0.0, MetricUnit.NoUnit),
            ],
            provider=svc.provider.name,
        )


def _stopped(build: dict[str, Any]) -> bool:
    """The build ended, or its dispatcher halted it (cancel, time limit, budget): no task may start."""
    return build["status"] in TERMINAL_BUILD_STATUSES or bool(build.get("haltedBy"))


def _call_with_timeout(svc: Services, task: Task, context: TaskContext, budget_s: float) -> TransformResult:
    kind = _KIND.get(task.type, TransformKind.code_gen)
    payload = {
        "prompt": task.input.prompt or task.description,
        "context": task.input.context,
        "targetPath": task.input.targetPath,
        "description": task.description,
        "name": task.name,
    }
    # The call's thread carries the invocation's context, as a Lambda's threads do.
    future = _pool.submit(contextvars.copy_context().run, svc.provider.transform, kind, payload, context)
    try:
        return future.result(timeout=budget_s)
    except FutureTimeout:
        context.cancel.set()  # abandon the call; a well-behaved provider stops at once
        raise ProviderTimeout(f"task did not finish within {budget_s:.1f}s") from None


@dataclass
class _Sight:
    """What a task's context holds before any read (its uploads and what the dependencies this
    invocation ran wrote) and what it still reads."""

    files: dict[str, str]
    from_deps: set[str]
    shared_paths: list[str]  # written by two of those dependencies: the current version is read
    keys: list[tuple[str, str]]  # the dependencies this invocation did not run
    target_key: tuple[str, str] | None  # the target's file-index item, unless a dependency wrote it
    early_key: str | None  # the cache key, when known before any read (every dependency's files at hand)

    @property
    def wanted(self) -> list[tuple[str, str]]:
        return [*self.keys, *([self.target_key] if self.target_key else [])]


@dataclass
class ReadAhead:
    """What one read fetched for the contexts of several dependents at once: the items found among
    `keys` (a key absent from `items` has none) and the cache items found among `cache_keys`."""

    keys: set[tuple[str, str]]
    items: dict[tuple[str, str], dict[str, Any]]
    cache_keys: set[str]
    cache: dict[str, dict[str, Any]]

    def covers(self, sight: _Sight) -> bool:
        return sight.early_key in self.cache_keys and set(sight.wanted) <= self.keys


def _sight(svc: Services, build: dict[str, Any], task: Task, known: dict[str, dict[str, str]] | None) -> _Sight:
    build_id = build["buildId"]
    files = dict(_uploaded(svc, build))
    from_deps: set[str] = set()
    # Its dependencies this invocation ran: what they wrote is at hand (a snapshot: the
    # invocation's other threads add to the map, and forget the oldest past its bound).
    at_hand = {dep: wrote for dep in task.dependencies if (wrote := (known or {}).get(dep)) is not None}
    seen: dict[str, int] = {}
    for wrote in at_hand.values():
        for path in wrote:
            seen[path] = seen.get(path, 0) + 1
    for wrote in at_hand.values():
        files.update({p: c for p, c in wrote.items() if seen[p] == 1})
        from_deps.update(wrote)
    shared_paths = sorted(p for p, n in seen.items() if n > 1)
    target = task.input.targetPath
    keys = [(build_id, dep) for dep in task.dependencies if dep not in at_hand]
    target_key = (svc.file_index.partition(build_id), target) if target and target not in from_deps else None
    early_key = None
    if not keys and not shared_paths:
        early_key = _cache_key(svc, task, _task_context(build, task, files, 0, 0.0, Spend()))
    return _Sight(files, from_deps, shared_paths, keys, target_key, early_key)


def _task_context(
    build: dict[str, Any], task: Task, files: dict[str, str], attempt: int, budget_s: float, spend: Spend
) -> TaskContext:
    return TaskContext(
        build_id=build["buildId"],
        task_id=task.id,
        task_type=task.type.value,
        task_name=task.name,
        attempt=attempt,
        build_prompt=build["prompt"],
        framework=build.get("framework"),
        target_path=task.input.targetPath,
        files=files,
        deadline_s=budget_s,
        cancel=threading.Event(),
        spend=spend,
    )


def _read_ahead(svc: Services, claims: list[Claimed]) -> None:
    """The dependents a completion handed to this invocation, whose cache keys are known before any
    read: their contexts' items and cache look-ups in one read (the first would otherwise wait for
    none, the last for every other's), which each uses if it still covers what it reads."""
    sights = [_sight(svc, c.build, c.task, c.known) for c in claims]
    cache_keys = list(dict.fromkeys(s.early_key for s in sights if s.early_key))
    if len(cache_keys) < 2:
        return  # one read each anyway
    keys = list(dict.fromkeys(k for s in sights if s.early_key for k in s.wanted))
    try:
        items, found = svc.tasks.get_many_with(keys, svc.settings.cache_table, [{"cacheKey": {"S": k}} for k in cache_keys])
    except Exception as exc:  # each reads its own then
        logger.warning("read-ahead of the handed tasks' contexts failed", extra={"code": error_code(exc)})
        return
    ahead = ReadAhead(set(keys), items, set(cache_keys), {str(i["cacheKey"]): i for i in found})
    for claimed in claims:
        claimed.ahead = ahead


def _context(
    svc: Services, build: dict[str, Any], task: Task, attempt: int, budget_s: float, spend: Spend,
    known: dict[str, dict[str, str]] | None = None, ahead: ReadAhead | None = None,
) -> tuple[TaskContext, str | None, TransformResult | None]:
    """What the task sees: every file uploaded with the build, what its dependencies wrote (the
    current version of each of their files), and the current content of its target if it exists —
    the last version a task wrote (writers of one path run one after another), else the upload.
    With it, the task's cache key and what the cache holds for it (None: nothing).

    Reads: the dependencies this invocation did not run and the target's file-index item in one
    BatchGetItem, which also looks the cache up when the key is known before that read (every
    dependency's files at hand): the target then only changes the key if it exists. `ahead`: what
    a read for several handed dependents fetched, used instead when it covers all that."""
    build_id = build["buildId"]
    sight = _sight(svc, build, task, known)
    files, from_deps, keys, target_key, wanted = sight.files, sight.from_deps, sight.keys, sight.target_key, sight.wanted
    early_key = sight.early_key
    target = task.input.targetPath
    cached: dict[str, Any] | None = None
    got: dict[tuple[str, str], dict[str, Any]] = {}
    covered = ahead is not None and ahead.covers(sight)
    if ahead is not None and covered:
        got = {k: ahead.items[k] for k in wanted if k in ahead.items}
        cached = ahead.cache.get(str(early_key))
    elif early_key and wanted:
        try:
            got, found = svc.tasks.get_many_with(wanted, svc.settings.cache_table, [{"cacheKey": {"S": early_key}}])
            cached = found[0] if found else None
        except Exception as exc:  # the cache is an optimisation: read the context alone, never fail on it
            logger.warning("context read with the cache look-up failed", extra={"code": error_code(exc)})
            early_key = None
    if not got and wanted and early_key is None:
        got = svc.tasks.get_many(wanted)
    for path in sight.shared_paths:
        files[path] = svc.files.get_text(build_id, path)
    for dep_key in keys:
        for f in (got.get(dep_key) or {}).get("files") or []:
            files[f["path"]] = svc.files.get_text(build_id, f["path"])
            from_deps.add(f["path"])
    target_read = bool(target and target_key and target not in from_deps and target_key in got)
    if target_read:
        with contextlib.suppress(NotFound):  # else the upload (if any) is its current content
            files[str(target)] = svc.files.get_text(build_id, str(target))
    if logger.log_level <= logging.DEBUG:  # hashing every file costs a little: only when it is logged
        logger.debug(
            "task.context",
            extra={
                "buildId": build_id,
                "taskId": task.id,
                "attempt": attempt,
                "prompt": fingerprint(task.input.prompt or task.description),
                "context": fingerprint(task.input.context),
                "files": [{"path": p, **fingerprint(c)} for p, c in sorted(files.items())],
            },
        )
    ctx = _task_context(build, task, files, attempt, budget_s, spend)
    if early_key and not target_read:  # the files are those the key was made of
        if wanted or covered:  # looked up with the read
            return ctx, early_key, _cache_result(svc, cached)
        return ctx, early_key, _cache_get(svc, early_key)
    cache_key = _cache_key(svc, task, ctx)
    return ctx, cache_key, _cache_get(svc, cache_key)


def _uploaded(svc: Services, build: dict[str, Any]) -> dict[str, str]:
    """The build's uploaded files, read once per process (they never change)."""
    build_id = str(build["buildId"])
    with _static_lock:
        known = _uploads.get(build_id)
    if known is not None:
        return known
    files = {p: svc.files.get_text(build_id, p, kind="input") for p in build.get("inputFiles") or []}
    with _static_lock:
        if len(_uploads) > 32:  # up to 1 MiB each
            _uploads.clear()
        _uploads[build_id] = files
    return files


def _store_files(svc: Services, build_id: str, task: Task, files: list[GeneratedFile]) -> list[FileInfo]:
    if not files:
        raise ProviderError("the provider returned no file for this task")
    return [svc.files.put(build_id, safe_relative_path(f.path), f.content, task.id) for f in files]


def _settle_failure(
    svc: Services,
    msg: TaskMessage,
    task: Task,
    error: str,
    *,
    timed_out: bool,
    started: int,
    usage: Usage | None = None,
    attempt_usage: Usage | None = None,
    final: bool = False,
) -> None:
    """Record a failed (or timed-out) attempt and what it cost; retry it, or report the run's end.
    `usage`: what the earlier attempts of this run cost; `attempt_usage`: this attempt's share;
    `final`: no retry whatever the attempt (a halted build)."""
    will_retry = msg.attempt < svc.settings.task_max_attempts and not final
    status = TaskStatus.queued if will_retry else TaskStatus.timeout if timed_out else TaskStatus.failed
    this = attempt_usage or Usage()
    total = (usage or Usage()) + this
    duration = svc.clock.now_ms() - started
    update = (
        _billed(Update(), this)
        .set(status=status.value, error=error, updatedAt=svc.clock.now_ms(), durationMs=duration, usage=total.model_dump())
        .when("{status} = :ip AND {attempt} = :a", ip=TaskStatus.in_progress.value, a=msg.attempt)
    )
    if timed_out:
        event, data = (
            EventType.task_timeout,
            {"taskId": task.id, "taskName": task.name, "attempt": msg.attempt, "willRetry": will_retry},
        )
    else:
        event, data = (
            EventType.task_failed,
            {"taskId": task.id, "taskName": task.name, "error": error, "attempt": msg.attempt, "willRetry": will_retry},
        )
    try:
        svc.events.record(msg.buildId, event, data, also=[svc.tasks.tx_update(msg.buildId, task.id, update)])
    except StateConflict:
        return
    _observe(svc, msg.buildId, task, msg.attempt, "task.timeout" if timed_out else "task.failed", duration, this, total, error)
    _follow_failure(svc, msg.model_copy(update={"spent": total}), will_retry)


def _follow_failure(svc: Services, msg: TaskMessage, will_retry: bool) -> None:
    if will_retry:
        delay = exponential_backoff_s(
            msg.attempt, base=svc.settings.task_retry_base_seconds, cap=RETRY_DELAY_CAP_S, jitter=(0.8, 1.2)
        )
        send_batch(
            svc.settings.tasks_queue_url,
            [
                task_message(
                    msg.buildId,
                    msg.taskId,
                    msg.attempt + 1,
                    delay_s=round(delay),
                    task=msg.task,
                    spent=msg.spent.model_dump() if msg.spent else None,
                )
            ],
        )
    else:
        _tell_dispatcher(svc, msg, "failed", (msg.spent.costUsd or 0.0) if msg.spent else 0.0)


def _tell_dispatcher(svc: Services, msg: TaskMessage, outcome: Outcome, cost: float) -> None:
    body = TaskFinished(buildId=msg.buildId, taskId=msg.taskId, attempt=msg.attempt, outcome=outcome, costUsd=cost)
    send_batch(svc.settings.task_finished_queue_url, [finished_message(body, f"{msg.taskId}:{msg.attempt}:{outcome}")])


def _cancel(svc: Services, msg: TaskMessage) -> None:
    try:
        svc.tasks.update(
            msg.buildId,
            msg.taskId,
            Update()
            .set(status=TaskStatus.cancelled.value, updatedAt=svc.clock.now_ms())
            .when_in("status", UNSTARTED_TASK_STATUSES),
        )
    except StateConflict:
        return
    _tell_dispatcher(svc, msg, "cancelled", 0.0)


class ComeBackLater(Exception):
    """The message must come back in `after_s` seconds (its handler makes it invisible until then)."""

    def __init__(self, message: str, after_s: float) -> None:
        super().__init__(message)
        # whole seconds (what SQS takes), rounded up, plus one for the clocks of two hosts
        self.after_s = float(math.ceil(max(1.0, after_s)) + 1)


class TaskStillRunning(ComeBackLater):
    """A redelivered message whose attempt another invocation may still be running."""


def _replay(
    svc: Services,
    msg: TaskMessage,
    task: Task,
    *,
    current: dict[str, Any] | None = None,
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
    current = current or svc.tasks.get(msg.buildId, msg.taskId) or {}
    status, attempt = current.get("status"), int(current.get("attempt", 0))
    if attempt > msg.attempt:
        return []  # a later attempt exists: this message is stale
    recorded = Usage.model_validate(current.get("usage") or {})  # this run's attempts so far
    if status == TaskStatus.completed:
        if "released" in current:  # its completion took the dispatcher's step itself
            return _replay_handoff(svc, msg, current, halted=halted)
        _tell_dispatcher(svc, msg, "completed", recorded.costUsd or 0.0)
    elif status in FAILED_TASK_STATUSES:
        _tell_dispatcher(svc, msg, "failed", recorded.costUsd or 0.0)
    elif status == TaskStatus.cancelled and attempt < msg.attempt:
        _tell_dispatcher(svc, msg, "cancelled", 0.0)  # the report of its cancel may have been lost
    elif status in UNSTARTED_TASK_STATUSES and (halted or attempt < msg.attempt):
        if halted:
            _cancel(svc, msg)
        elif not handed:  # the claim lost to a race it may win now
            raise ComeBackLater(f"{msg.taskId} attempt {msg.attempt} could not be claimed yet", 1.0)
    elif status == TaskStatus.queued and attempt == msg.attempt:
        _follow_failure(svc, msg.model_copy(update={"spent": recorded}), True)  # the retry may not have been sent
    elif status == TaskStatus.in_progress and attempt == msg.attempt:
        started = int(current.get("startedAt", 0))
        stale_in = limits.stale_after_s(svc.settings.task_timeout_seconds) - (svc.clock.now_ms() - started) / 1000
        if stale_in > 0:
            raise TaskStillRunning(f"{msg.taskId} attempt {msg.attempt} may still be running; checking later", stale_in)
        if halted:
            _settle_failure(
                svc, msg, task, "the worker stopped before the task finished", timed_out=False, started=started,
                usage=msg.spent, final=True,
            )
            return []
        adopted = _adopt(svc, msg, task, started)
        if adopted is None:  # it moved on meanwhile (settled, halted, or run again elsewhere): look again
            fresh = svc.builds.get(msg.buildId, attributes=_BUILD_FIELDS)
            return _replay(svc, msg, task, handed=handed, halted=fresh is None or _stopped(fresh))
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
    build = _static_fields.get(msg.buildId)
    if build is None:
        build = _remember_build(svc.builds.get(msg.buildId, attributes=_BUILD_FIELDS) or {"buildId": msg.buildId})
    count("task.adopted")
    logger.info("a dead attempt is run again by the message that watches it", extra=msg.model_dump(exclude={"task"}))
    return Claimed(msg, build, task, now)


def _replay_handoff(svc: Services, msg: TaskMessage, current: dict[str, Any], *, halted: bool) -> list[Claimed]:
    """Redo what a completion that took the dispatcher's step may not have finished: send the
    released tasks nobody claimed (cancel them if the build stopped), and look after the dependents
    it handed to its own consumer. Returns those this message runs again itself."""
    handed = {(t, int(a)) for t, a in current.get("handedTo") or []}
    stale_s = limits.stale_after_s(svc.settings.task_timeout_seconds)
    resend: list[tuple[str, int]] = []
    watched: list[tuple[TaskMessage, dict[str, Any]]] = []
    running_for = 0.0  # the longest any handed attempt may still run
    for task_id, attempt in current.get("released") or []:
        child = svc.tasks.get(msg.buildId, task_id)
        if child is None:
            continue
        child_msg = TaskMessage(buildId=msg.buildId, taskId=task_id, attempt=int(attempt))
        if (task_id, int(attempt)) in handed:
            watched.append((child_msg, child))
            if child.get("status") == TaskStatus.in_progress and int(child.get("attempt") or 0) == int(attempt):
                running_for = max(running_for, stale_s - (svc.clock.now_ms() - int(child.get("startedAt") or 0)) / 1000)
        elif int(child.get("attempt") or 0) < int(attempt) and child.get("status") in UNSTARTED_TASK_STATUSES:
            if halted:
                _cancel(svc, child_msg)
            else:
                resend.append((task_id, int(attempt)))
    dispatching.send_tasks(svc, msg.buildId, resend)
    if running_for > 0:  # all handed at once, so all die at once: look after them together
        raise TaskStillRunning(f"dependents handed by {msg.taskId} may still be running; checking later", running_for)
    adopted: list[Claimed] = []
    for child_msg, child in watched:
        try:
            adopted += _replay(
                svc, child_msg, Task.model_validate(child["task"]), current=child, handed=True, halted=halted
            )
        except ComeBackLater as exc:  # raced by another consumer: those adopted here wait for the next look
            raise ComeBackLater(str(exc), max(exc.after_s, stale_s if adopted else 0.0)) from None
    return adopted


# --- cache --------------------------------------------------------------------------------------
def _cache_key(svc: Services, task: Task, context: TaskContext) -> str | None:
    if svc.settings.task_cache_ttl_seconds <= 0:
        return None
    material = json.dumps(
        {
            "type": task.type.value,
            "input": task.input.model_dump(mode="json", exclude={"dependencies"}),
            "name": task.name,
            "description": task.description,
            "framework": context.framework,
            "prompt": context.build_prompt,
            "files": sorted((p, hashlib.sha256(c.encode()).hexdigest()) for p, c in context.files.items()),
            "provider": svc.provider.identity(),
            "templates": TEMPLATES_VERSION,  # editing a prompt template must not serve old outputs
        },
        sort_keys=True,
    )
    return hashlib.sha256(material.encode()).hexdigest()


def _cache_get(svc: Services, key: str | None) -> TransformResult | None:
    if not key:
        return None
    data = svc.cache.get(key)  # a failed read is a miss: the cache never fails a task
    if not data:
        return None
    return _cache_result(svc, data)


def _cache_result(svc: Services, data: dict[str, Any] | None) -> TransformResult | None:
    """What a cache item holds, unless it expired (DynamoDB's TTL deletes late)."""
    if not data:
        return None
    if int(data.get(TTL_ATTRIBUTE, 0)) < svc.clock.time():  # DynamoDB's TTL deletes late: check it here
        return None
    return TransformResult(files=[GeneratedFile(**f) for f in data["files"]], usage=Usage())


def _cache_entry(svc: Services, key: str, result: TransformResult) -> list[dict[str, Any]]:
    """The transaction entry writing the result's cache item, which commits with the completion
    (none for a result too big to cache)."""
    body = [{"path": f.path, "content": f.content} for f in result.files]
    if len(json.dumps(body)) > 96 * 1024:
        return []  # kept well under DynamoDB's item limit: a bigger result is simply not cached
    ttl = min(svc.settings.task_cache_ttl_seconds, svc.settings.record_ttl_seconds)
    return [svc.cache.tx_put(key, body, int(svc.clock.time()) + ttl)]
