"""A real `stepwise serve` in its own process, for the tests (and the dashboard bench) that talk to it
as a client does: over HTTP and the WebSocket on 127.0.0.1.

`serving(...)` picks a free port, starts `python -m local serve` with a clean environment (none of
the caller's STEPWISE_*, AI_PROVIDER*, TASK_*, WEBHOOK_*, BUILD_*, COGNITO_* settings leak in), writes its output
to a log file, and yields once `/openapi.json` answers; a server that exits or never answers fails
with its log. On exit it is terminated (killed if it does not stop).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
CLEARED_PREFIXES = ("STEPWISE_", "AI_PROVIDER", "TASK_", "WEBHOOK_", "BUILD_", "COGNITO_")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Serve:
    base: str  # http://127.0.0.1:PORT
    log: Path
    started_in: float  # seconds from the process's start to its first answer
    proc: subprocess.Popen[bytes]

    @property
    def ws_base(self) -> str:
        return "ws" + self.base.removeprefix("http")

    def output(self) -> str:
        return self.log.read_text(errors="replace")


@contextmanager
def serving(
    workdir: Path,
    *,
    tokens: Mapping[str, str],
    script: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
    port: int | None = None,
    timeout: float = 90,
) -> Iterator[Serve]:
    """`tokens`: bearer token -> user (STEPWISE_LOCAL_TOKENS); `script`: the mock provider's script;
    `env`: further settings; `port`: a free port, when the address must be known beforehand. Files
    (the script, serve.log) go in `workdir`."""
    workdir.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(CLEARED_PREFIXES)}
    full_env["PYTHONPATH"] = str(ROOT)
    full_env["STEPWISE_LOCAL_TOKENS"] = ",".join(f"{token}:{user}" for token, user in tokens.items())
    if script is not None:
        path = workdir / "script.json"
        path.write_text(json.dumps(script))
        full_env["STEPWISE_MOCK_SCRIPT"] = str(path)
    full_env.update(env or {})
    log = workdir / "serve.log"
    base = f"http://127.0.0.1:{port}"
    started = time.monotonic()
    with log.open("wb") as sink:
        proc = subprocess.Popen(
            [sys.executable, "-m", "local", "serve", "--port", str(port)],
            env=full_env,
            stdout=sink,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
    try:
        server = Serve(base=base, log=log, started_in=_wait_up(base, proc, log, started, timeout), proc=proc)
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def _wait_up(base: str, proc: subprocess.Popen[bytes], log: Path, started: float, timeout: float) -> float:
    deadline = started + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/openapi.json", timeout=1).status_code == 200:
                return time.monotonic() - started
        except httpx.TransportError:
            pass
        if proc.poll() is not None:
            raise RuntimeError(f"stepwise serve exited ({proc.returncode}):\n{log.read_text(errors='replace')}")
        time.sleep(0.05)
    raise RuntimeError(f"stepwise serve never answered in {timeout:.0f} s:\n{log.read_text(errors='replace')}")
