"""The layers keep their places: nothing in shared/logic talks to AWS except through shared/dal."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
VENDOR_MODULES = ("boto3", "botocore", "shared.dal.aws")


def vendor_imports(path: Path) -> list[str]:
    """Every import in the file (at any depth: module level, in functions, under TYPE_CHECKING)
    of boto3, botocore or the AWS client helper, as `line: module`."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
        for name in names:
            if any(name == m or name.startswith(m + ".") for m in VENDOR_MODULES):
                found.append(f"{node.lineno}: {name}")
                break
    return found


def test_the_logic_layer_never_imports_the_aws_sdk() -> None:
    files = sorted((ROOT / "shared" / "logic").rglob("*.py"))
    assert len(files) > 5
    offenders = {str(f.relative_to(ROOT)): hits for f in files if (hits := vendor_imports(f))}
    assert offenders == {}, "shared/logic must reach AWS through shared/dal only"


def test_the_check_sees_every_form_of_import(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    for source in (
        "import boto3",
        "import botocore.config as c",
        "from botocore.exceptions import ClientError",
        "from shared.dal.aws import client",
        "from shared.dal import aws",
        "def f():\n    from shared.dal.aws import to_item\n",
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import boto3\n",
    ):
        sample.write_text(source)
        assert vendor_imports(sample), source
    sample.write_text("from shared.dal.table import Update\nimport shared.dal.events\nfrom shared import dal\n")
    assert vendor_imports(sample) == []


def imports_of(path: Path) -> set[str]:
    """Every module the file imports (absolute imports, at any depth), with `from m import n` as m and m.n."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.update([node.module, *(f"{node.module}.{alias.name}" for alias in node.names)])
    return found


def reaching(path: Path, prefixes: tuple[str, ...]) -> list[str]:
    return sorted(m for m in imports_of(path) if any(m == p or m.startswith(p + ".") for p in prefixes))


def test_readiness_decides_in_pure_modules() -> None:
    """The plan's graph, its validation and the scheduler decide without reading or writing a store:
    the steps that apply them (dispatch state, dispatching, re-opening, handoff, stream start) do that."""
    readiness = ROOT / "shared" / "logic" / "readiness"
    stores = (
        "boto3",
        "botocore",
        "shared.dal",
        "shared.logic.services",
        "shared.logic.readiness.dispatch_state",
        "shared.logic.readiness.dispatching",
        "shared.logic.readiness.reopen",
    )
    for name in ("dag.py", "scheduler.py", "plan_validation.py"):
        assert reaching(readiness / name, stores) == [], name


def test_the_attempts_plumbing_knows_nothing_of_an_attempt() -> None:
    """Slots, threads, the time limit and the claims gate serve the attempt; they never reach into it
    (nor into a store)."""
    plumbing = ROOT / "shared" / "logic" / "attempts" / "concurrency.py"
    assert reaching(plumbing, ("shared.logic", "shared.dal", "boto3")) == []
    runner = ROOT / "shared" / "logic" / "attempts" / "runner.py"
    assert reaching(runner, ("shared.dal", "boto3")) == []


def test_the_import_check_reads_imports_inside_functions(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text("def f():\n    from shared.dal.table import Update\n")
    assert reaching(sample, ("shared.dal",)) == ["shared.dal.table", "shared.dal.table.Update"]
