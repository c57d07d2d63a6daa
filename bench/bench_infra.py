"""Infrastructure figures: synth wall time, each function's code asset, the dependency layer.

    python -m bench.bench_infra            # all figures (the layer rows run pip: needs PyPI)
    python -m bench.bench_infra --no-layer # skip the layer build

Baselines, measured in the same run:
- synth: a cold `cdk synth` of an empty stack (jsii start-up and assembly writing, nothing of ours);
  ours is a cold synth of the whole app with cdk-nag, bundling skipped as in the tests.
- function code: one undifferentiated asset holding every function and `shared/` (what a single
  shared code asset would weigh); ours is the per-function staging directory, zipped.
- layer: the same pip build without the Anthropic SDK, i.e. what giving plan/task a second layer
  would save the other three functions; the target is Lambda's 250 MiB unzipped limit.
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
import zipfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
MIB = 1024 * 1024
KIB = 1024
TASK_CODE_TARGET_BYTES = 1 * MIB
LAMBDA_UNZIPPED_LIMIT_BYTES = 250 * MIB

_FULL_SYNTH = """
from infra.app import build_app
app, _ = build_app({"aws:cdk:bundling-stacks": []}, outdir=OUTDIR)
app.synth()
"""
_EMPTY_SYNTH = """
import aws_cdk as cdk
app = cdk.App(outdir=OUTDIR)
cdk.Stack(app, "Empty")
app.synth()
"""


def _row(figure: str, ours: float | None, baseline: float | None, target: float | None, unit: str) -> dict[str, Any]:
    ratio = round(ours / baseline, 3) if ours is not None and baseline else None
    return {"figure": figure, "ours": ours, "baseline": baseline, "ratio": ratio, "target": target, "unit": unit}


def _timed_synth(script: str) -> float:
    """Wall time of one cold synth in a fresh interpreter (jsii start-up included, as for a user)."""
    with tempfile.TemporaryDirectory(prefix="stepwise-bench-synth-") as outdir:
        code = f"OUTDIR = {outdir!r}\n" + textwrap.dedent(script)
        env = {**os.environ, "JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION": "20"}
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, check=True, capture_output=True)
        return time.perf_counter() - start


def _zipped_size(root: Path) -> int:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(root.rglob("*")):
            if path.is_file():
                zf.write(path, path.relative_to(root))
    return buf.tell()


def _tree_size(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def synth_rows(repeat: int = 1) -> list[dict[str, Any]]:
    ours = min(_timed_synth(_FULL_SYNTH) for _ in range(repeat))
    empty = min(_timed_synth(_EMPTY_SYNTH) for _ in range(repeat))
    return [_row("cdk synth wall time (whole app + cdk-nag, cold)", round(ours, 2), round(empty, 2), None, "s")]


def asset_rows() -> list[dict[str, Any]]:
    from infra.packaging import stage_function_code
    from shared.constants import FUNCTION_HANDLERS

    rows = []
    with tempfile.TemporaryDirectory(prefix="stepwise-bench-assets-") as tmp:
        everything = Path(tmp) / "everything"
        ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
        shutil.copytree(REPO / "shared", everything / "shared", ignore=ignore)
        shutil.copytree(REPO / "functions", everything / "functions", ignore=ignore)
        baseline = _zipped_size(everything)
        for name in FUNCTION_HANDLERS:
            staged = stage_function_code(name, dest=Path(tmp) / name)
            size = _zipped_size(staged)
            target = TASK_CODE_TARGET_BYTES / KIB if name == "task" else None
            rows.append(
                _row(
                    f"{name} function code asset (zipped)",
                    round(size / KIB, 1),
                    round(baseline / KIB, 1),
                    target,
                    "KiB",
                )
            )
    return rows


def layer_rows() -> list[dict[str, Any]]:
    from infra.packaging import build_layer, runtime_requirements

    with tempfile.TemporaryDirectory(prefix="stepwise-bench-layer-") as tmp:
        full = build_layer(runtime_requirements(), Path(tmp) / "full")
        lean = build_layer(runtime_requirements(extras=()), Path(tmp) / "lean")
        full_size, lean_size = _tree_size(full), _tree_size(lean)
        full_zip, lean_zip = _zipped_size(full.parent), _zipped_size(lean.parent)
    return [
        _row(
            "dependency layer (unzipped; baseline without anthropic)",
            round(full_size / MIB, 1),
            round(lean_size / MIB, 1),
            LAMBDA_UNZIPPED_LIMIT_BYTES / MIB,
            "MiB",
        ),
        _row(
            "dependency layer (zipped; baseline without anthropic)",
            round(full_zip / MIB, 1),
            round(lean_zip / MIB, 1),
            None,
            "MiB",
        ),
    ]


def run(*, layer: bool = True, repeat: int = 1) -> list[dict[str, Any]]:
    rows = synth_rows(repeat) + asset_rows()
    if layer:
        try:
            rows += layer_rows()
        except RuntimeError as exc:  # no PyPI access: report the gap instead of failing the run
            print(f"layer not measured: {str(exc).splitlines()[0]}", file=sys.stderr)
            rows.append(_row("dependency layer (unzipped)", None, None, LAMBDA_UNZIPPED_LIMIT_BYTES / MIB, "MiB"))
    return rows


def _print(rows: list[dict[str, Any]]) -> None:
    header = ("figure", "ours", "baseline", "ratio", "target", "unit")
    table = [header] + [tuple("" if r[k] is None else str(r[k]) for k in header) for r in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(header))]
    for line in table:
        print("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-layer", action="store_true", help="skip the pip layer build")
    parser.add_argument("--repeat", type=int, default=1, help="synth runs per figure (best of)")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(REPO))
    _print(run(layer=not args.no_layer, repeat=args.repeat))


if __name__ == "__main__":
    main()
