"""Infrastructure figures: synth wall time, resource count, each function's code asset, the layer.

    python -m bench.bench_infra            # all figures (the layer rows run pip: need the package index)
    python -m bench.bench_infra --no-layer # skip the layer builds

Baselines, measured in the same run:
- synth: a cold `cdk synth` of an empty stack (jsii start-up and assembly writing, nothing of ours);
  ours is a cold synth of the committed prod stage with cdk-nag, bundling skipped as in the tests.
  Each figure starts when the interpreter is launched and ends when it exits.
- before/after (`BASELINE_REF`, the last commit before the deploy hardening of issue 14, taken with
  `git archive` into a scratch directory and synthesized by the same interpreter): its synth time
  and resource count beside ours. Skipped when the ref is not in the repository (shallow clone).
- function code: one undifferentiated asset holding every function and `shared/` (what a single
  shared code asset would weigh); ours is the per-function staging directory, zipped.
- layer: ours is the pip build of the hash-locked `infra/layer-requirements.txt`; the baseline is the
  build the layer had before, from the unlocked pyproject pins (transitive versions left to pip).
  Each figure is the size of the installed tree (unzipped) or of its zip; the target is Lambda's
  250 MiB unzipped limit.
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

BASELINE_REF = "b089cde"

_FULL_SYNTH = """
import json, pathlib
from infra.app import build_app
app, stack = build_app({"aws:cdk:bundling-stacks": [], **CONTEXT}, outdir=OUTDIR)
app.synth()
count = sum(len(json.loads(t.read_text())["Resources"]) for t in pathlib.Path(OUTDIR).glob("*.template.json"))
print("RESOURCES", count)
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


def _timed_synth(script: str, *, cwd: Path = REPO, context: dict[str, Any] | None = None) -> tuple[float, int | None]:
    """Wall time of one cold synth in a fresh interpreter (jsii start-up included, as for a user),
    and the resource count it printed (every stack of the app)."""
    with tempfile.TemporaryDirectory(prefix="stepwise-bench-synth-") as outdir:
        code = f"OUTDIR = {outdir!r}\nCONTEXT = {context or {}!r}\n" + textwrap.dedent(script)
        env = {**os.environ, "JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION": "20", "PYTHONPATH": str(cwd)}
        start = time.perf_counter()
        proc = subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, check=True, capture_output=True, text=True)
        elapsed = time.perf_counter() - start
    counts = [int(line.split()[1]) for line in proc.stdout.splitlines() if line.startswith("RESOURCES ")]
    return elapsed, (counts[0] if counts else None)


def _baseline_tree(ref: str, dest: Path) -> Path | None:
    """The repository at `ref`, unpacked into `dest` (None if the ref is unknown here)."""
    archive = subprocess.run(["git", "-C", str(REPO), "archive", ref], capture_output=True)
    if archive.returncode != 0:
        return None
    dest.mkdir(parents=True, exist_ok=True)
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive.stdout, check=True)
    return dest


def _zipped_size(root: Path) -> int:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(root.rglob("*")):
            if path.is_file():
                zf.write(path, path.relative_to(root))
    return buf.tell()


def _tree_size(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def synth_rows(repeat: int = 1, baseline_ref: str | None = BASELINE_REF) -> list[dict[str, Any]]:
    prod = [_timed_synth(_FULL_SYNTH, context={"stage": "prod"}) for _ in range(repeat)]
    empty = min(_timed_synth(_EMPTY_SYNTH)[0] for _ in range(repeat))
    ours_time, ours_count = min(prod)
    rows = [_row("cdk synth wall time (prod stage + cdk-nag, cold)", round(ours_time, 2), round(empty, 2), None, "s")]
    before_time = before_count = None
    if baseline_ref:
        with tempfile.TemporaryDirectory(prefix="stepwise-bench-before-") as tmp:
            tree = _baseline_tree(baseline_ref, Path(tmp) / "repo")
            if tree is not None:
                before = [_timed_synth(_FULL_SYNTH, cwd=tree) for _ in range(repeat)]
                before_time, before_count = min(before)
    rows.append(
        _row(
            f"cdk synth wall time (baseline: {baseline_ref}, before issue 14)",
            round(ours_time, 2),
            round(before_time, 2) if before_time else None,
            None,
            "s",
        )
    )
    rows.append(
        _row(
            f"CloudFormation resources, all stacks (baseline: {baseline_ref})",
            float(ours_count) if ours_count is not None else None,
            float(before_count) if before_count is not None else None,
            500.0,  # CloudFormation's per-stack limit
            "resources",
        )
    )
    return rows


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
    from infra.packaging import LAYER_LOCK, build_layer, pip_install_command, runtime_requirements

    with tempfile.TemporaryDirectory(prefix="stepwise-bench-layer-") as tmp:
        locked = build_layer(LAYER_LOCK, Path(tmp) / "locked")
        # Before: the same pip target, from the unlocked pins (what the layer was built from).
        unlocked_in = Path(tmp) / "unlocked.txt"
        unlocked_in.write_text("\n".join(runtime_requirements()) + "\n")
        before_target = Path(tmp) / "before" / "python"
        cmd = [a for a in pip_install_command(unlocked_in, before_target) if a not in ("--require-hashes", "--no-deps")]
        subprocess.run(cmd, check=True, capture_output=True)
        sizes = {
            "locked": (_tree_size(locked), _zipped_size(locked.parent)),
            "before": (_tree_size(before_target), _zipped_size(before_target.parent)),
        }
    return [
        _row(
            "dependency layer, unzipped (baseline: unlocked pins, before)",
            round(sizes["locked"][0] / MIB, 1),
            round(sizes["before"][0] / MIB, 1),
            LAMBDA_UNZIPPED_LIMIT_BYTES / MIB,
            "MiB",
        ),
        _row(
            "dependency layer, zipped (baseline: unlocked pins, before)",
            round(sizes["locked"][1] / MIB, 1),
            round(sizes["before"][1] / MIB, 1),
            None,
            "MiB",
        ),
    ]


def run(*, layer: bool = True, repeat: int = 1) -> list[dict[str, Any]]:
    rows = synth_rows(repeat) + asset_rows()
    if layer:
        try:
            rows += layer_rows()
        except (RuntimeError, subprocess.CalledProcessError) as exc:  # no package index: report the gap
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
