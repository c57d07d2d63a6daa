"""What an attempt sees: the build's uploads, what its dependencies wrote, its target's current
content, and with them its cache key and what the cache holds for it."""

from __future__ import annotations

import contextlib
import logging
import threading
from dataclasses import dataclass
from typing import Any

from shared.dal.vendor_errors import error_code
from shared.errors import NotFound
from shared.logic.attempts import result_cache
from shared.logic.attempts.build_facts import uploaded
from shared.logic.services import Services
from shared.models.plan import Task
from shared.models.records import BuildRecord, TaskRecord
from shared.observability import fingerprint, logger
from shared.providers.base import Spend, TaskContext, TransformResult


@dataclass
class Sight:
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
    """What one read fetched for the contexts of several dependents at once: the task records and
    the keys found among `keys` (the target's file-index items too) and the cache items found among
    `cache_keys`."""

    keys: set[tuple[str, str]]
    records: dict[tuple[str, str], TaskRecord]
    found: set[tuple[str, str]]
    cache_keys: set[str]
    cache: dict[str, dict[str, Any]]

    def covers(self, sight: Sight) -> bool:
        return sight.early_key in self.cache_keys and set(sight.wanted) <= self.keys


def sight_of(svc: Services, build: BuildRecord, task: Task, known: dict[str, dict[str, str]] | None) -> Sight:
    build_id = build.buildId
    files = dict(uploaded(svc, build))
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
        early_key = result_cache.key_of(svc, task, _context(build, task, files, 0, 0.0, Spend()))
    return Sight(files, from_deps, shared_paths, keys, target_key, early_key)


def _context(
    build: BuildRecord, task: Task, files: dict[str, str], attempt: int, budget_s: float, spend: Spend
) -> TaskContext:
    return TaskContext(
        build_id=build.buildId,
        task_id=task.id,
        task_type=task.type.value,
        task_name=task.name,
        attempt=attempt,
        build_prompt=build.prompt,
        framework=build.framework,
        target_path=task.input.targetPath,
        files=files,
        deadline_s=budget_s,
        cancel=threading.Event(),
        spend=spend,
    )


def task_context(
    svc: Services, build: BuildRecord, task: Task, attempt: int, budget_s: float, spend: Spend,
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
    build_id = build.buildId
    sight = sight_of(svc, build, task, known)
    files, from_deps, keys, target_key, wanted = sight.files, sight.from_deps, sight.keys, sight.target_key, sight.wanted
    early_key = sight.early_key
    target = task.input.targetPath
    cached: dict[str, Any] | None = None
    got: dict[tuple[str, str], TaskRecord] = {}
    found: set[tuple[str, str]] = set()  # the dependencies' items and the target's file-index item
    covered = ahead is not None and ahead.covers(sight)
    if ahead is not None and covered:
        got = {k: ahead.records[k] for k in wanted if k in ahead.records}
        found = {k for k in wanted if k in ahead.found}
        cached = ahead.cache.get(str(early_key))
    elif early_key and wanted:
        try:
            got, found, others = svc.tasks.get_many_with(
                wanted, svc.settings.cache_table, [{"cacheKey": {"S": early_key}}]
            )
            cached = others[0] if others else None
        except Exception as exc:  # the cache is an optimisation: read the context alone, never fail on it
            logger.warning("context read with the cache look-up failed", extra={"code": error_code(exc)})
            early_key = None
    if not found and wanted and early_key is None:
        got, found = svc.tasks.get_many(wanted)
    for path in sight.shared_paths:
        files[path] = svc.files.get_text(build_id, path)
    for dep_key in keys:
        dep = got.get(dep_key)
        for f in dep.files if dep else ():
            files[f.path] = svc.files.get_text(build_id, f.path)
            from_deps.add(f.path)
    target_read = bool(target and target_key and target not in from_deps and target_key in found)
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
    ctx = _context(build, task, files, attempt, budget_s, spend)
    if early_key and not target_read:  # the files are those the key was made of
        if wanted or covered:  # looked up with the read
            return ctx, early_key, result_cache.result_of(svc, cached)
        return ctx, early_key, result_cache.lookup(svc, early_key)
    cache_key = result_cache.key_of(svc, task, ctx)
    return ctx, cache_key, result_cache.lookup(svc, cache_key)
