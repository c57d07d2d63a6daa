"""Identifiers and time."""

from __future__ import annotations

import time

from ulid import ULID


def now_ms() -> int:
    return int(time.time() * 1000)


def new_build_id() -> str:
    return f"bld_{ULID()}"


def new_event_id() -> str:
    return f"evt_{ULID()}"


def new_plan_id() -> str:
    return f"pln_{ULID()}"
