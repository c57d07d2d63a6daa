"""Run the `stepwise` command the way a user does: a separate process, real files, real HTTP."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.serving import free_port

__all__ = ["free_port"]

ROOT = Path(__file__).resolve().parents[2]


def stepwise_cmd() -> list[str]:
    return [sys.executable, "-m", "local"]


def run_stepwise(
    args: list[str], *, env: dict[str, str] | None = None, timeout: float = 120, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    full_env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("STEPWISE_", "AI_PROVIDER", "TASK_", "WEBHOOK_", "BUILD_"))
    }
    full_env["PYTHONPATH"] = str(ROOT)
    full_env.update(env or {})
    return subprocess.run(
        [*stepwise_cmd(), *args], capture_output=True, text=True, timeout=timeout, env=full_env, cwd=cwd or ROOT
    )


def events_of(stdout: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stdout.splitlines() if line.strip()]


@pytest.fixture
def script_file(tmp_path: Path):
    def write(script: dict[str, Any]) -> Path:
        path = tmp_path / "script.json"
        path.write_text(json.dumps(script))
        return path

    return write
