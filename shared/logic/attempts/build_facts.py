"""What a task needs of its build, kept per process: the fields that never change and the uploads."""

from __future__ import annotations

import threading

from shared.logic.services import Services
from shared.models.build import TERMINAL_BUILD_STATUSES
from shared.models.records import BuildRecord

# What a task needs of its build (with the record's required fields): never the dispatch state,
# which grows with the build's size.
BUILD_FIELDS = ["haltedBy", "framework", "inputFiles"]
# Per process: buildId -> the build as first read here, for what never changes (prompt, framework,
# uploads); its status is read afresh wherever it matters.
_static_fields: dict[str, BuildRecord] = {}
_static_lock = threading.Lock()
_uploads: dict[str, dict[str, str]] = {}  # per process: buildId -> its uploaded files (never change)


def kept_build(build_id: str) -> BuildRecord | None:
    """What this process keeps of the build, if it has seen it."""
    return _static_fields.get(build_id)


def remember_build(build: BuildRecord) -> BuildRecord:
    """Keep the build for what a task needs of it and never changes (not its status)."""
    with _static_lock:
        if len(_static_fields) > 1024:
            _static_fields.clear()
        _static_fields[build.buildId] = build
    return build


def uploaded(svc: Services, build: BuildRecord) -> dict[str, str]:
    """The build's uploaded files, read once per process (they never change)."""
    build_id = build.buildId
    with _static_lock:
        known = _uploads.get(build_id)
    if known is not None:
        return known
    files = {p: svc.files.get_text(build_id, p, kind="input") for p in build.inputFiles}
    with _static_lock:
        if len(_uploads) > 32:  # up to 1 MiB each
            _uploads.clear()
        _uploads[build_id] = files
    return files


def stopped(build: BuildRecord) -> bool:
    """The build ended, or its dispatcher halted it (cancel, time limit, budget): no task may start."""
    return build.status in TERMINAL_BUILD_STATUSES or bool(build.haltedBy)
