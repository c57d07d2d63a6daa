"""What a task needs of its build, kept per process: the fields that never change and the uploads."""

from __future__ import annotations

import threading
from typing import Any

from shared.logic.services import Services
from shared.models.build import TERMINAL_BUILD_STATUSES

# What a task needs of its build: never the dispatch state, which grows with the build's size.
BUILD_FIELDS = ["buildId", "status", "haltedBy", "prompt", "framework", "inputFiles"]
_STATIC_BUILD_FIELDS = ("buildId", "prompt", "framework", "inputFiles")
_static_fields: dict[str, dict[str, Any]] = {}  # per process: buildId -> its _STATIC_BUILD_FIELDS
_static_lock = threading.Lock()
_uploads: dict[str, dict[str, str]] = {}  # per process: buildId -> its uploaded files (never change)


def kept_build(build_id: str) -> dict[str, Any] | None:
    """What this process keeps of the build, if it has seen it."""
    return _static_fields.get(build_id)


def remember_build(build: dict[str, Any]) -> dict[str, Any]:
    """Keep what a task needs of its build and never changes (not its status)."""
    static = {k: build.get(k) for k in _STATIC_BUILD_FIELDS}
    with _static_lock:
        if len(_static_fields) > 1024:
            _static_fields.clear()
        _static_fields[str(build["buildId"])] = static
    return static


def uploaded(svc: Services, build: dict[str, Any]) -> dict[str, str]:
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


def stopped(build: dict[str, Any]) -> bool:
    """The build ended, or its dispatcher halted it (cancel, time limit, budget): no task may start."""
    return build["status"] in TERMINAL_BUILD_STATUSES or bool(build.get("haltedBy"))
