"""Streaming execution (issue 17): tasks start while the plan streams, against planning first.

The same plans, in the same run, on one local runtime, with STREAM_EXECUTION on and off by turns
(the setting is read per build). The mock streams at a real model's pace: 40-character chunks every
20 ms. Each task takes as long as the whole plan takes to stream (`delay_ms` set to the plan's
streaming time, about 1.6 s for 10 tasks: "a plan whose planning takes as long as one task"; shorter
than a real model's few seconds per task, scaled so that the run stays short, with the same ratio).

Instants (all this machine's clock, epoch ms):
- *prompt*: `time.time()` in this process just before `POST /builds` is invoked (in-process).
- *first task started*: the `timestamp` of the build's first `task_started`, which the event log
  stamps in the write that claims the task (the task consumer's transaction).
- *first file written*: the `timestamp` of the first `task_completed`, committed right after that
  task's files were stored in S3 (the file is readable from then on).
- *makespan*: prompt → the `build_completed` event's `timestamp`.
- *JSON closed*: `time.time()` recorded by this bench when the mock's stream yields the task, i.e.
  the moment the streaming parser saw its closing brace (a wrapper around the stream's iterator, in
  the plan step's thread). "started after its JSON closed" is that task's `task_started` timestamp
  minus this instant: two clocks readings taken by two different components, neither copied.
"""

from __future__ import annotations

import json
import os
import statistics
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

CHUNK_CHARS = 40
CHUNK_DELAY_MS = 20
RUNS = 5
QUICK_RUNS = 1
USER = "dev"
TERMINAL = {"build_completed", "build_failed", "build_cancelled"}

_closed: dict[str, dict[str, float]] = {}  # prompt -> task id -> when its JSON closed (epoch ms)
_lock = threading.Lock()
_details: list[str] = []


def _task(i: int, deps: list[str], name: str) -> dict[str, Any]:
    return {
        "id": f"t{i}",
        "type": "create_file",
        "name": name,
        "description": f"Write {name.lower()} for the landing page",
        "estimatedDuration": 10,
        "priority": 5,
        "input": {"prompt": f"Write {name.lower()}", "targetPath": f"src/part{i}.tsx", "dependencies": deps},
    }


def fan_out() -> list[dict[str, Any]]:
    """Set up the project, then nine files that each need it: 10 tasks, two levels."""
    return [_task(0, [], "Project setup"), *[_task(i, ["t0"], f"Component {i}") for i in range(1, 10)]]


def three_levels() -> list[dict[str, Any]]:
    """Setup, eight components that need it, a page that needs them all: 10 tasks, three levels."""
    return [_task(0, [], "Project setup"), *[_task(i, ["t0"], f"Component {i}") for i in range(1, 9)],
            _task(9, [f"t{i}" for i in range(1, 9)], "Page")]


def streaming_ms(plan: list[dict[str, Any]]) -> float:
    """How long the mock takes to stream this plan: its text in chunks, one delay between two."""
    text = json.dumps({"tasks": plan}, indent=2, ensure_ascii=False)  # what the mock streams
    chunks = -(-len(text) // CHUNK_CHARS)
    return (chunks - 1) * CHUNK_DELAY_MS


def _watch_stream() -> None:
    """Record when each task's JSON closes: wrap the mock stream's iterator (once per process)."""
    from shared.providers import mock

    if getattr(mock.MockPlanStream, "_bench_watched", False):
        return
    original = mock.MockPlanStream.__iter__

    def watched(self: Any) -> Iterator[Any]:
        seen: dict[str, float] = {}
        key = getattr(self, "_bench_prompt", None)
        for item in original(self):
            if isinstance(item, dict) and isinstance(item.get("id"), str):
                seen.setdefault(item["id"], time.time() * 1000)
            yield item
        with _lock:
            _closed[str(key)] = seen

    original_plan_stream = mock.MockProvider.plan_stream

    def plan_stream(self: Any, prompt: str, context: Any) -> Any:
        stream = original_plan_stream(self, prompt, context)
        stream._bench_prompt = prompt
        return stream

    mock.MockPlanStream.__iter__ = watched  # type: ignore[method-assign]
    mock.MockProvider.plan_stream = plan_stream  # type: ignore[method-assign]
    mock.MockPlanStream._bench_watched = True  # type: ignore[attr-defined]


class Runtime:
    def __init__(self) -> None:
        fd, path = tempfile.mkstemp(prefix="stepwise-bench-stream-", suffix=".json")
        os.close(fd)
        self.script = Path(path)
        self.script.write_text("{}")
        from local.runtime import LocalRuntime

        self.rt = LocalRuntime(env={"AI_PROVIDER": "mock", "STEPWISE_MOCK_SCRIPT": str(self.script),
                                    "TASK_CACHE_TTL_SECONDS": "0"})

    def __enter__(self) -> Runtime:
        self.rt.start()
        _watch_stream()
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.rt.stop()
        finally:
            self.script.unlink(missing_ok=True)
            os.environ.pop("STREAM_EXECUTION", None)

    def build(self, plan: list[dict[str, Any]], task_ms: float, *, stream: bool, prompt: str) -> dict[str, float]:
        from shared.logic.services import reset_services, services
        from shared.providers.factory import reset_providers
        from shared.settings import reset_settings

        os.environ["STREAM_EXECUTION"] = "true" if stream else "false"
        reset_settings()
        self.script.write_text(json.dumps({
            "plan": {"tasks": plan, "chunk_chars": CHUNK_CHARS, "chunk_delay_ms": CHUNK_DELAY_MS},
            "default_task": {"delay_ms": task_ms},
        }))
        reset_providers()
        reset_services()
        t0 = time.time() * 1000
        code, created = self.rt.invoke_api("POST", "/builds", user=USER,
                                           body={"prompt": prompt, "maxConcurrency": 10})
        if code != 202:
            raise RuntimeError(f"POST /builds answered {code}: {created}")
        build_id = created["buildId"]
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            build = services().builds.get(build_id, attributes=["status"])
            if build is not None and build.status in {
                "completed", "completed_with_errors", "failed", "cancelled", "timed_out"}:
                break
            time.sleep(0.1)
        events = []
        for _ in range(50):
            events, _next = services().events.read(build_id, after=0, limit=1000)
            if events and events[-1].type.value in TERMINAL:
                break
            time.sleep(0.1)
        end = events[-1]
        if end.type.value != "build_completed":
            raise RuntimeError(f"build {build_id} ended {end.type.value}: {end.data}")
        started = [e for e in events if e.type.value == "task_started"]
        completed = [e for e in events if e.type.value == "task_completed"]
        generated = next(e for e in events if e.type.value == "plan_generated")
        first = started[0]
        with _lock:
            closed = _closed.get(prompt, {})
        partial = next(e for e in events if e.type.value == "plan_partial"
                       and e.data["latestTasks"][0]["id"] == first.data["taskId"])
        return {
            "close_to_commit": partial.timestamp - closed.get(first.data["taskId"], float("nan")),
            "first_started": first.timestamp - t0,
            "first_file": completed[0].timestamp - t0,
            "makespan": end.timestamp - t0,
            "plan": generated.timestamp - t0,
            "after_close": first.timestamp - closed.get(first.data["taskId"], float("nan")),
            "before_plan": float(sum(e.seq < generated.seq for e in started)),
        }


def _median(values: list[float]) -> float:
    return float(statistics.median(values))


def run(quick: bool = False) -> list[dict[str, Any]]:
    _details.clear()
    runs = QUICK_RUNS if quick else RUNS
    rows: list[dict[str, Any]] = []
    plans = {"fan-out (setup → 9 files)": fan_out(), "three levels (setup → 8 → page)": three_levels()}
    with Runtime() as rt:
        rt.build(fan_out()[:2], 10, stream=True, prompt="warm-up")  # imports, tables, first clients
        for label, plan in plans.items():
            task_ms = streaming_ms(plan)
            on: list[dict[str, float]] = []
            off: list[dict[str, float]] = []
            for r in range(runs):  # by turns, so that the machine's load falls on both alike
                on.append(rt.build(plan, task_ms, stream=True, prompt=f"stream on {label} {r}"))
                off.append(rt.build(plan, task_ms, stream=False, prompt=f"stream off {label} {r}"))

            def med(results: list[dict[str, float]], key: str) -> float:
                return _median([x[key] for x in results])

            makespan_on, makespan_off = med(on, "makespan"), med(off, "makespan")
            shorter = 1 - makespan_on / makespan_off
            rows += [
                {"figure": f"{label}: prompt → first task started", "ours": round(med(on, "first_started")),
                 "baseline": round(med(off, "first_started")), "ratio": round(med(on, "first_started") / med(off, "first_started"), 3),
                 "target": "—", "unit": "ms"},
                {"figure": f"{label}: prompt → first file written", "ours": round(med(on, "first_file")),
                 "baseline": round(med(off, "first_file")), "ratio": round(med(on, "first_file") / med(off, "first_file"), 3),
                 "target": "—", "unit": "ms"},
                {"figure": f"{label}: first task started after its JSON closed", "ours": round(med(on, "after_close")),
                 "baseline": round(med(off, "after_close")), "ratio": round(med(on, "after_close") / med(off, "after_close"), 3),
                 "target": "≤ 50 ms", "unit": "ms", "met": med(on, "after_close") <= 50},
                {"figure": f"{label}: makespan (prompt → build_completed)", "ours": round(makespan_on),
                 "baseline": round(makespan_off), "ratio": round(makespan_on / makespan_off, 3),
                 "target": "≥ 25 % shorter" if label.startswith("fan-out") else "—", "unit": "ms",
                 **({"met": shorter >= 0.25} if label.startswith("fan-out") else {}),
                 "note": f"{shorter:.0%} shorter"},
            ]
            _details.append(
                f"- {label}: of the first task's {med(on, 'after_close'):.0f} ms from JSON closed to started, "
                f"{med(on, 'close_to_commit'):.0f} ms until the plan step's commit began (its `plan_partial`, "
                "which hands it, is stamped in that write); the rest is that commit, the send, the consumer's "
                "receive and its claim."
            )
            _details.append(
                f"- {label}: plan streamed in {med(on, 'plan'):.0f} ms (on) / {med(off, 'plan'):.0f} ms (off) "
                f"to `plan_generated`; each task {task_ms:.0f} ms; tasks started before `plan_generated` "
                f"(on): {med(on, 'before_plan'):.0f}; median of {runs} builds each."
            )
    _details.append(
        f"- Mock pace: {CHUNK_CHARS}-character chunks every {CHUNK_DELAY_MS} ms; maxConcurrency 10; task cache off. "
        "Ours: STREAM_EXECUTION=true; baseline: STREAM_EXECUTION=false; same plans, same runtime, by turns."
    )
    return rows


def details() -> str:
    return "\n".join(_details)


if __name__ == "__main__":
    for row in run():
        print(json.dumps(row))
    print(details())
