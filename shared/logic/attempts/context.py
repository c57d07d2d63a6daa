"""What an attempt sees: the build's uploads, what its dependencies wrote, its target's current
content, and with them its cache key and what the cache holds for it."""

from __future__ import annotations

import contextlib
import logging
import threading
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


def task_context(
    svc: Services, build: BuildRecord, task: Task, attempt: int, budget_s: float, spend: Spend,
    known: dict[str, dict[str, str]] | None = None,
) -> tuple[TaskContext, str | None, TransformResult | None]:
    """What the task sees: every file uploaded with the build, what its dependencies wrote (the
    current version of each of their files), and the current content of its target if it exists —
    the last version a task wrote (writers of one path run one after another), else the upload.
    With it, the task's cache key and what the cache holds for it (None: nothing).

    Reads: the dependencies this invocation did not run and the target's file-index item in one
    BatchGetItem, which also looks the cache up when the key is known before that read (every
    dependency's files at hand): the target then only changes the key if it exists."""
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
    # A path two of them wrote: its current version is read (whichever wrote it last).
    shared_paths = sorted(p for p, n in seen.items() if n > 1)
    target = task.input.targetPath
    keys = [(build_id, dep) for dep in task.dependencies if dep not in at_hand]
    target_key = (svc.file_index.partition(build_id), target) if target and target not in from_deps else None

    def context() -> TaskContext:
        return TaskContext(
            build_id=build_id,
            task_id=task.id,
            task_type=task.type.value,
            task_name=task.name,
            attempt=attempt,
            build_prompt=build.prompt,
            framework=build.framework,
            target_path=target,
            files=files,
            deadline_s=budget_s,
            cancel=threading.Event(),
            spend=spend,
        )

    early_key = result_cache.key_of(svc, task, context()) if not keys and not shared_paths else None
    wanted = [*keys, *([target_key] if target_key else [])]
    cached: dict[str, Any] | None = None
    got: dict[tuple[str, str], TaskRecord] = {}
    found: set[tuple[str, str]] = set()  # the dependencies' items and the target's file-index item
    if early_key and wanted:
        try:
            got, found, cached = svc.tasks.get_many_with(
                wanted, svc.settings.cache_table, {"cacheKey": {"S": early_key}}
            )
        except Exception as exc:  # the cache is an optimisation: read the context alone, never fail on it
            logger.warning("context read with the cache look-up failed", extra={"code": error_code(exc)})
            early_key = None
    if not found and wanted and early_key is None:
        got, found = svc.tasks.get_many(wanted)
    for path in shared_paths:
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
    ctx = context()
    if early_key and wanted and not target_read:  # the files are those the key was made of
        return ctx, early_key, result_cache.result_of(svc, cached)
    cache_key = early_key if early_key and not target_read and not wanted else result_cache.key_of(svc, task, ctx)
    return ctx, cache_key, result_cache.lookup(svc, cache_key)
