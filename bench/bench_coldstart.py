"""Cold-start proxy: import time of each Lambda handler module in a fresh interpreter (issue 7, #6).

A Lambda cold start pays for the handler module's imports before the first event. Each figure is the
median of `RUNS` fresh interpreters timing `import functions.<name>.handler`; the baseline is a bare
`import boto3` timed the same way in the same run (every function needs boto3 anyway). Target: each
handler within 2x of boto3.

Byte code: compiled files go to a private cache (`PYTHONPYCACHEPREFIX`) warmed by one untimed import
first, so every timed run loads .pyc files, as a deployed function does (pip compiles on install),
and nothing is written into the repository. Where a handler misses, `-X importtime` names the
imports that dominate (see `details()`).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from shared.constants import FUNCTION_HANDLERS

REPO = Path(__file__).resolve().parent.parent
RUNS = 5
QUICK_RUNS = 3
TARGET_RATIO = 2.0
TOP_OFFENDERS = 8

_TIMER = (
    "import time\n"
    "t0 = time.perf_counter()\n"
    "import {module}\n"
    "print(time.perf_counter() - t0)\n"
)

_details: list[str] = []


def _env(cache: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env.update(
        {
            "PYTHONPATH": str(REPO),
            "PYTHONPYCACHEPREFIX": cache,
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_REGION": "us-east-1",
            "POWERTOOLS_TRACE_DISABLED": "true",
            "POWERTOOLS_METRICS_DISABLED": "true",
            "POWERTOOLS_SERVICE_NAME": "stepwise",
        }
    )
    return env


def _time_import(module: str, env: dict[str, str]) -> float:
    out = subprocess.run(
        [sys.executable, "-c", _TIMER.format(module=module)],
        cwd=REPO,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    return float(out.stdout.strip().splitlines()[-1]) * 1000


def medians_ms(modules: list[str], env: dict[str, str], runs: int) -> dict[str, float]:
    """Median import time per module; rounds interleave the modules so that load on the machine
    drifting during the run hits the baseline and the handlers alike."""
    for module in modules:
        _time_import(module, env)  # warm the byte-code cache and the OS page cache
    samples: dict[str, list[float]] = {m: [] for m in modules}
    for _ in range(runs):
        for module in modules:
            samples[module].append(_time_import(module, env))
    return {m: statistics.median(v) for m, v in samples.items()}


def _parse_importtime(stderr: str) -> list[tuple[str, int, int]]:
    rows = []
    for line in stderr.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        head, cumulative, name = line.split("|", 2)
        name = name.rstrip()
        rows.append((name[1:] if name.startswith(" ") else name, int(head.split(":", 1)[1]), int(cumulative)))
    return rows


def _importtime(module: str, env: dict[str, str]) -> str:
    return subprocess.run(
        [sys.executable, "-X", "importtime", "-c", f"import {module}"],
        cwd=REPO,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stderr


def _package(dotted: str) -> str:
    """What to blame an import on: a first-party module (shared.x, functions.x) or a third-party
    top-level package."""
    parts = dotted.split(".")
    return ".".join(parts[:2]) if parts[0] in ("shared", "functions") else parts[0]


def offenders(stderr: str, module: str, top: int = TOP_OFFENDERS) -> list[tuple[str, str, float]]:
    """The heaviest imports that cross a package boundary: (imported, importer, share of the total).

    `-X importtime` prints a tree, children before their parent (one more indentation level). An
    edge from a first-party module to a package, or between packages, is where a lazy import could
    cut; its cumulative time is what the cut would save (nested edges overlap).
    """
    rows = _parse_importtime(stderr)
    parent: dict[int, int] = {}
    stack: list[int] = []
    for i, (name, _, _) in enumerate(rows):
        depth = len(name) - len(name.lstrip())
        while stack and len(rows[stack[-1]][0]) - len(rows[stack[-1]][0].lstrip()) > depth:
            parent[stack.pop()] = i
        stack.append(i)
    total = max((cum for name, _, cum in rows if name == module), default=0) or 1
    best: dict[str, tuple[int, str]] = {}
    for i, (name, _, cum) in enumerate(rows):
        if i not in parent:
            continue
        imported, importer = _package(name.strip()), _package(rows[parent[i]][0].strip())
        if imported == importer or imported.startswith(("functions", "shared")):
            continue  # third-party packages only; the importer names the first-party module to fix
        if imported not in best or cum > best[imported][0]:
            best[imported] = (cum, rows[parent[i]][0].strip())
    ranked = sorted(best.items(), key=lambda kv: -kv[1][0])[:top]
    return [(pkg, importer, cum / total) for pkg, (cum, importer) in ranked]


def run(quick: bool = False) -> list[dict[str, Any]]:
    runs = QUICK_RUNS if quick else RUNS
    rows: list[dict[str, Any]] = []
    _details.clear()
    with tempfile.TemporaryDirectory(prefix="stepwise-bench-pyc-") as cache:
        env = _env(cache)
        handlers = [dotted.rpartition(".")[0] for dotted in FUNCTION_HANDLERS.values()]
        medians = medians_ms(["boto3", *handlers], env, runs)
        baseline = medians["boto3"]
        missed: list[str] = []
        for module in handlers:
            ours = medians[module]
            ratio = ours / baseline
            met = ratio <= TARGET_RATIO
            note = None
            top = offenders(_importtime(module, env), module)
            if not met:
                missed.append(module)
                heavy = ", ".join(f"{pkg} ({share:.0%})" for pkg, _, share in top[:3])
                note = f"import time dominated by {heavy}"
            rows.append(
                {
                    "figure": f"cold import `{module}` (median of {runs} fresh interpreters); baseline `import boto3`",
                    "ours": round(ours, 1),
                    "baseline": round(baseline, 1),
                    "ratio": round(ratio, 2),
                    "target": f"ratio <= {TARGET_RATIO}",
                    "met": met,
                    "unit": "ms",
                    "note": note,
                }
            )
            _details.append(
                f"- `{module}`: {ours:.0f} ms = {ratio:.2f}x boto3. Heaviest imports (share of the import's "
                "cumulative time, one `-X importtime` run; nested ones overlap): "
                + ", ".join(f"`{pkg}` {share:.0%} (from `{importer}`)" for pkg, importer, share in top)
            )
    if missed:
        _details.append(
            "\nWhat would close the gap: import the heavy packages inside the functions that use them "
            "(lazy imports), so a cold start pays only for what its first event needs."
        )
    return rows


def details() -> str:
    return "\n".join(_details)


if __name__ == "__main__":
    for row in run():
        print(json.dumps(row))
    print(details())
