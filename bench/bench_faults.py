"""Faults: what the crash harness covers in one suite run, and how soon a crashed consumer's work runs
again.

- Harness coverage: `tests/integration/test_crash_harness.py` run as the suite runs it (pytest, in a
  subprocess), counting its cases, the faults its schedules held and those that fired (a fault
  fires when its boundary's nth call happens in the run; an API call racing an invocation counts
  as one), the DynamoDB conflicts and throttles put on the wire (each send answered with one),
  the API calls that raced an invocation, and the runs played (a retry after the end re-opens).
- Crash recovery, local: the local runtime (TASK_TIMEOUT_SECONDS=4: a 2 s lease, an attempt surely
  dead 9 s after it started) runs a -> {b, c}; the consumer of a runs b and c, handed in a's
  commit, and is killed while they run. From the kill to the moment b runs again (its adopted
  attempt's new startedAt). Baseline: what the same crash cost without the lease, the tasks
  queue's visibility timeout in that runtime (the deployed 6x-function-timeout value scaled by
  limits.LOCAL_VISIBILITY_SCALE).
- Crash recovery, deployed settings: the bound computed from shared.limits with the deployed
  defaults (TASK_TIMEOUT_SECONDS=60): max(lease, stale-after) = max(ceil(60/2), 60 + max(5, 60/2))
  + 2 (whole seconds, clock skew) = 92 s, against the tasks queue's visibility 6 x (60 + 60) = 720 s before.
- A failing dispatcher record (computed): its FIFO group waits out the task-finished queue's
  visibility; locally the deployed 360 s times the one local factor.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent


def _harness() -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        stats = Path(tmp) / "stats.json"
        env = {**os.environ, "STEPWISE_HARNESS_STATS": str(stats)}
        started = time.monotonic()
        proc = subprocess.run(
            [sys.executable, "-m", "pytest", "tests/integration/test_crash_harness.py", "-q", "-p", "no:randomly"],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        elapsed = time.monotonic() - started
        data = json.loads(stats.read_text()) if stats.exists() else {}
        tail = (proc.stdout.strip().splitlines() or [""])[-1]
        passed = int(tail.split(" passed")[0].split()[-1]) if " passed" in tail else 0
        return {**data, "tests": passed, "seconds": elapsed, "ok": proc.returncode == 0}


def _crash_recovery_local() -> tuple[float, float]:
    """(seconds from the kill to b running again, the tasks queue's visibility timeout)."""
    import functions.task.handler as task_handler
    from local import invocations
    from local.runtime import LocalRuntime
    from shared.logic.services import services
    from tests.helpers import task, wait_for

    script = Path(tempfile.mkdtemp()) / "mock.json"
    plan = {"tasks": [task("a"), task("b", "a"), task("c", "a")]}
    slow = {"delay_ms": 1500}
    script.write_text(json.dumps({"plan": plan, "default_task": {"delay_ms": 0}, "tasks": {"b": slow, "c": slow}}))
    env = {"STEPWISE_MOCK_SCRIPT": str(script), "TASK_TIMEOUT_SECONDS": "4", "TASK_CACHE_TTL_SECONDS": "0"}
    killed: dict[str, float] = {}
    original = task_handler.handler

    def crashing(event: dict[str, Any], context: Any) -> Any:
        body = json.loads(event["Records"][0]["body"])
        invocation = invocations.current.get()
        if body["taskId"] == "a" and not killed and invocation is not None:

            def kill() -> None:  # while b and c, handed in a's commit, run
                invocation.kill()
                killed["at_ms"] = time.time() * 1000

            threading.Timer(0.8, kill).start()
        return original(event, context)

    with LocalRuntime(env=env) as rt:
        task_handler.handler = crashing  # type: ignore[assignment]
        try:
            status, created = rt.invoke_api("POST", "/builds", user="dev", body={"prompt": "a crash while b and c run"})
            assert status == 202, created
            build_id = created["buildId"]
            wait_for(
                lambda: (build := services().builds.get(build_id)) is not None
                and build.status in ("completed", "completed_with_errors", "failed", "timed_out"),
                timeout=120,
                what="the build to end",
            )
            item = services().tasks.get(build_id, "b")
            rerun_ms = float((item.startedAt if item else None) or 0)
            return (rerun_ms - killed.get("at_ms", rerun_ms)) / 1000, float(rt.visibility_s("tasks"))
        finally:
            task_handler.handler = original  # type: ignore[assignment]


def run(quick: bool = False) -> list[dict[str, Any]]:
    from shared import limits, resources

    rows: list[dict[str, Any]] = []
    h = _harness()
    rows.append(
        {
            "figure": "crash harness: cases run per suite run (property examples + fixed cases)",
            "ours": h.get("cases", 0) + max(0, h.get("tests", 0) - 1),
            "baseline": None,
            "ratio": None,
            "target": ">= 30",
            "unit": "cases",
            "note": f"{h.get('deliveries', 0)} deliveries, {h.get('seconds', 0):.0f} s, passed={h.get('ok')}",
        }
    )
    fired, scheduled = h.get("faults_fired", 0), h.get("faults_scheduled", 0)
    rows.append(
        {
            "figure": "crash harness: faults injected per suite run (fired / scheduled)",
            "ours": fired,
            "baseline": scheduled,
            "ratio": round(fired / scheduled, 2) if scheduled else None,
            "target": ">= 20",
            "unit": "faults",
            "note": f"{h.get('expiries', 0)} expiries while running, {h.get('dead_lettered', 0)} dead-letterings",
        }
    )
    rows.append(
        {
            "figure": "crash harness: DynamoDB TransactionConflict / throttles sent on the wire per suite run "
            "(SDK retries and our own see them); API calls raced against an invocation",
            "ours": h.get("service_errors_sent", 0),
            "baseline": None,
            "ratio": None,
            "target": ">= 20",
            "unit": "sends",
            "note": f"{h.get('races', 0)} API calls raced (approve x2, retry/skip vs Finalize, cancel vs handoff), "
            f"{h.get('runs', 0)} runs played ({h.get('runs', 0) - h.get('cases', 0)} re-opened by a retry), "
            f"{h.get('superseded', 0)} executions ended superseded (their API call died before its commit)",
        }
    )
    recovered_s, visibility_s = _crash_recovery_local()
    bound = limits.crash_recovery_bound_s(4)
    rows.append(
        {
            "figure": "local: consumer killed -> its handed dependent runs again (TASK_TIMEOUT_SECONDS=4); "
            "baseline: the tasks queue's visibility, what it cost before",
            "ours": round(recovered_s, 1),
            "baseline": visibility_s,
            "ratio": round(recovered_s / visibility_s, 3),
            "target": f"<= {bound + 2:.0f}",
            "unit": "s",
        }
    )
    rows.append(
        {
            "figure": "a failing dispatcher record holds its build back before its first retry (computed, deployed "
            "and local): at most DISPATCH_RETRY_BASE_S (its visibility set on failure) vs the task-finished "
            "queue's visibility 6 x 60, what it waited before",
            "ours": limits.DISPATCH_RETRY_BASE_S,
            "baseline": resources.queue_visibility_s("task-finished", 60),
            "ratio": round(limits.DISPATCH_RETRY_BASE_S / resources.queue_visibility_s("task-finished", 60), 3),
            "target": "<= 60",
            "unit": "s",
            "note": f"then doubling up to the queue's visibility; {limits.TASK_FINISHED_DLQ_MAX_RECEIVES} receives "
            "before its DLQ",
        }
    )
    deployed = limits.crash_recovery_bound_s(60)
    before = resources.queue_visibility_s("tasks", 60)
    rows.append(
        {
            "figure": "deployed settings (computed): max(lease ceil(60/2), 60 + max(5, 60/2)) + 2 vs the tasks queue's "
            "visibility 6 x (60 + 60)",
            "ours": deployed,
            "baseline": before,
            "ratio": round(deployed / before, 3),
            "target": "<= 120",
            "unit": "s",
        }
    )
    return rows
