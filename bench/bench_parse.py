"""Plan-stream parse CPU: our incremental scanner against re-parsing the buffer on every chunk.

Why: the planner streams tasks to the user as they close. A partial JSON parser re-run on the whole
buffer per chunk is the obvious implementation and is quadratic; this benchmark keeps the linear
scanner honest. Figures are CPU time (`time.process_time`), median of several runs.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable
from typing import Any

import jiter

from shared.providers.streaming import PlanStreamParser

TASKS = 200
CHUNK = 40
RUNS = 11
TARGET_MS = 5.0
TARGET_RATIO = 10.0


def make_plan(n_tasks: int = TASKS, *, verbose: bool = False) -> str:
    """A generated plan. Compact: ~165 bytes per task (33 KB), near the 27 KB plan the toolchain notes
    measured. Verbose: ~380 bytes per task, with escapes, braces inside strings and nested input.
    """
    tasks: list[dict[str, Any]] = []
    for i in range(n_tasks):
        deps = [f"t{j}" for j in range(max(0, i - 2), i)]
        if not verbose:
            tasks.append({"id": f"t{i}", "type": "create_file", "name": f"File {i}",
                          "estimatedDuration": 10, "priority": i % 5,
                          "input": {"targetPath": f"src/f{i}.ts", "dependencies": deps}})
            continue
        tasks.append({
            "id": f"t{i}",
            "type": "create_component" if i % 3 else "create_file",
            "name": f"Component {i} \"Hero\" section",
            "description": f"Build the {{hero}} block #{i} with a headline, subtext and a call to action.",
            "estimatedDuration": 20 + i % 7,
            "priority": i % 5,
            "input": {
                "prompt": f"Write src/components/Hero{i}.tsx using Tailwind; export default.",
                "targetPath": f"src/components/Hero{i}.tsx",
                "dependencies": deps,
            },
        })
    return json.dumps({"tasks": tasks})


def chunks_of(text: str, size: int = CHUNK) -> list[str]:
    return [text[i:i + size] for i in range(0, len(text), size)]


def parse_ours(chunks: list[str]) -> int:
    parser = PlanStreamParser()
    count = 0
    for chunk in chunks:
        count += len(parser.feed(chunk))
    return count + len(parser.close())


def parse_baseline(chunks: list[str]) -> int:
    """Re-parse everything so far with jiter partial mode; emit tasks before the last element."""
    buf = ""
    emitted = 0
    for chunk in chunks:
        buf += chunk
        doc = jiter.from_json(buf.encode(), partial_mode=True)
        tasks = doc.get("tasks", []) if isinstance(doc, dict) else []
        ready = max(0, len(tasks) - 1)
        emitted = max(emitted, ready)
    doc = jiter.from_json(buf.encode())
    return len(doc["tasks"])


def _median_ms(fn: Callable[[list[str]], int], chunks: list[str], expect: int) -> float:
    samples = []
    for _ in range(RUNS):
        start = time.process_time()
        got = fn(chunks)
        samples.append((time.process_time() - start) * 1000)
        if got != expect:
            raise AssertionError(f"{fn.__name__} produced {got} tasks, expected {expect}")
    return statistics.median(samples)


def _measure(text: str) -> tuple[float, float]:
    chunks = chunks_of(text)
    parse_ours(chunks)  # warm up (regex and import caches)
    return _median_ms(parse_ours, chunks, TASKS), _median_ms(parse_baseline, chunks, TASKS)


def run() -> list[dict[str, Any]]:
    """Rows: compact plan (the target figures), speed-up, and a verbose plan for context."""
    rows: list[dict[str, Any]] = []
    for verbose in (False, True):
        text = make_plan(verbose=verbose)
        ours, baseline = _measure(text)
        ratio = round(baseline / ours, 1) if ours > 0 else None
        label = f"{TASKS}-task {'verbose' if verbose else 'compact'} plan ({len(text) / 1024:.0f} KB)"
        rows.append({"figure": f"parse CPU, {label}, {CHUNK}-byte chunks", "ours": round(ours, 2),
                     "baseline": round(baseline, 2), "ratio": ratio,
                     "target": None if verbose else f"<= {TARGET_MS}", "unit": "ms"})
        if not verbose:
            rows.append({"figure": f"speed-up over re-parsing per chunk, {label}", "ours": ratio,
                         "baseline": 1.0, "ratio": ratio, "target": f">= {TARGET_RATIO}", "unit": "x"})
    return rows


if __name__ == "__main__":
    for row in run():
        print(json.dumps(row))
