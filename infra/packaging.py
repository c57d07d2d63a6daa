"""Lambda packaging without Docker.

- Code: one staging directory per function holding only `shared/`, `functions/__init__.py` and
  `functions/<name>/`, so a function's asset (and its hash, hence its redeploys) changes only when
  code it can import changes.
- Dependencies: one layer, built by `pip install --platform manylinux2014_aarch64 --only-binary`
  on the machine that synthesizes (no Docker), from the runtime pins in pyproject.toml so the layer
  and the tested environment cannot drift.
"""

from __future__ import annotations

import atexit
import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path
from typing import Any

import jsii
from aws_cdk import BundlingOptions, DockerImage, ILocalBundling
from aws_cdk import aws_lambda as lambda_

REPO_ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = REPO_ROOT / "pyproject.toml"

# The Lambda target: python3.12 on Graviton.
LAMBDA_PYTHON_VERSION = "3.12"
LAMBDA_PLATFORM = "manylinux2014_aarch64"

# pyproject extras that go into the layer besides [project] dependencies: the Anthropic SDK is
# imported lazily by the provider, so functions that never plan or run tasks never load it.
LAYER_EXTRAS: tuple[str, ...] = ("anthropic",)

_IGNORED = shutil.ignore_patterns("__pycache__", "*.pyc", "*.pyo", ".pytest_cache", ".mypy_cache", "*.egg-info")


def runtime_requirements(extras: tuple[str, ...] = LAYER_EXTRAS, pyproject: Path = PYPROJECT) -> list[str]:
    """The pinned runtime requirements: `[project] dependencies` plus the named optional extras."""
    project = tomllib.loads(pyproject.read_text())["project"]
    reqs = list(project["dependencies"])
    optional = project.get("optional-dependencies", {})
    for extra in extras:
        for req in optional[extra]:
            if req not in reqs:
                reqs.append(req)
    unpinned = [r for r in reqs if "==" not in r]
    if unpinned:
        raise ValueError(f"runtime requirements must be pinned with ==: {unpinned}")
    return reqs


class _Staging:
    """Per-process scratch directory, removed at exit (CDK copies assets into its outdir)."""

    _root: Path | None = None

    @classmethod
    def root(cls) -> Path:
        if cls._root is None:
            cls._root = Path(tempfile.mkdtemp(prefix="stepwise-cdk-"))
            atexit.register(shutil.rmtree, cls._root, True)
        return cls._root


def stage_function_code(name: str, *, repo_root: Path = REPO_ROOT, dest: Path | None = None) -> Path:
    """Copy what function `name` can import into its own directory and return that directory."""
    source = repo_root / "functions" / name
    if not source.is_dir():
        raise FileNotFoundError(f"no code for function {name!r} at {source}")
    out = dest or (_Staging.root() / "functions" / name)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    shutil.copytree(repo_root / "shared", out / "shared", ignore=_IGNORED)
    (out / "functions").mkdir()
    shutil.copy2(repo_root / "functions" / "__init__.py", out / "functions" / "__init__.py")
    shutil.copytree(source, out / "functions" / name, ignore=_IGNORED)
    return out


def stage_layer_source(requirements: list[str], *, dest: Path | None = None) -> Path:
    """A directory holding only requirements.txt: the layer asset's hash follows the pins."""
    out = dest or (_Staging.root() / "layer")
    out.mkdir(parents=True, exist_ok=True)
    (out / "requirements.txt").write_text("\n".join(requirements) + "\n")
    return out


def pip_install_command(requirements: list[str], target: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
        "--no-compile",
        "--no-input",
        "--target",
        str(target),
        "--platform",
        LAMBDA_PLATFORM,
        "--implementation",
        "cp",
        "--python-version",
        LAMBDA_PYTHON_VERSION,
        "--only-binary=:all:",
        *requirements,
    ]


def build_layer(requirements: list[str], output_dir: Path) -> Path:
    """pip-install the requirements for Lambda into `output_dir/python` (the layer layout)."""
    target = output_dir / "python"
    target.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(pip_install_command(requirements, target), capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"building the dependency layer failed (pip exit {proc.returncode}):\n{proc.stderr[-4000:]}")
    # Console scripts are useless in a layer; the runtime cannot write bytecode caches to /opt.
    shutil.rmtree(target / "bin", ignore_errors=True)
    for cache in target.rglob("__pycache__"):
        shutil.rmtree(cache, ignore_errors=True)
    return target


@jsii.implements(ILocalBundling)
class PipLayerBundling:
    """Bundles the dependency layer on the synthesizing machine instead of in Docker."""

    def __init__(self, requirements: list[str]) -> None:
        self.requirements = list(requirements)

    def try_bundle(self, output_dir: str, *, image: DockerImage, **_options: Any) -> bool:
        build_layer(self.requirements, Path(output_dir))
        return True  # never fall back to Docker: it is not available where Stepwise synthesizes


def dependency_layer_code(requirements: list[str]) -> lambda_.Code:
    source = stage_layer_source(requirements)
    return lambda_.Code.from_asset(
        str(source),
        bundling=BundlingOptions(
            image=lambda_.Runtime.PYTHON_3_12.bundling_image,
            local=PipLayerBundling(requirements),
        ),
    )


def function_code(name: str) -> lambda_.Code:
    return lambda_.Code.from_asset(str(stage_function_code(name)))
