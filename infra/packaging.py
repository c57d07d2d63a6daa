"""Lambda packaging without Docker.

- Code: one staging directory per function holding only `shared/`, `functions/__init__.py` and
  `functions/<name>/`, so a function's asset (and its hash, hence its redeploys) changes only when
  code it can import changes.
- Dependencies: one layer, installed by `pip install --require-hashes --no-deps --platform
  manylinux2014_aarch64 --only-binary` on the machine that synthesizes (no Docker) from
  `infra/layer-requirements.txt`: every package, transitive ones included, pinned with the sha256 of
  each artifact. The layer asset's source is that lock file alone, so its hash (and a redeploy)
  follows the lock, and two synths of one lock ship the same bytes or fail.
- The lock is generated from the runtime pins in pyproject.toml (`[project] dependencies` plus
  `LAYER_EXTRAS`) for the Lambda target with `python -m infra.packaging lock` (uv's cross-platform
  resolver); a test fails when the pins and the lock disagree.
"""

from __future__ import annotations

import atexit
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path
from typing import Any

import jsii
from aws_cdk import AssetHashType, BundlingOptions, DockerImage, ILocalBundling
from aws_cdk import aws_lambda as lambda_

REPO_ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = REPO_ROOT / "pyproject.toml"
LAYER_LOCK = REPO_ROOT / "infra" / "layer-requirements.txt"
UV_VERSION = "0.13.8"  # only to regenerate the lock

# The Lambda target: python3.12 on Graviton.
LAMBDA_PYTHON_VERSION = "3.12"
LAMBDA_PLATFORM = "manylinux2014_aarch64"
LAMBDA_UV_PLATFORM = "aarch64-manylinux2014"
_LOCK_LINE = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?==(?P<version>[^\s;\\]+)")

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


def stage_layer_source(lock: Path = LAYER_LOCK, *, dest: Path | None = None) -> Path:
    """A directory holding only the lock file: the layer asset's hash is the lock's."""
    out = dest or (_Staging.root() / "layer")
    out.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(lock, out / LAYER_LOCK.name)
    return out


def pip_install_command(lock: Path, target: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
        "--no-compile",
        "--no-input",
        "--require-hashes",
        "--no-deps",  # the lock is the whole closure: nothing may come from outside it
        "--target",
        str(target),
        "--platform",
        LAMBDA_PLATFORM,
        "--implementation",
        "cp",
        "--python-version",
        LAMBDA_PYTHON_VERSION,
        "--only-binary=:all:",
        "--requirement",
        str(lock),
    ]


def build_layer(lock: Path, output_dir: Path) -> Path:
    """pip-install the locked requirements for Lambda into `output_dir/python` (the layer layout)."""
    target = output_dir / "python"
    target.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(pip_install_command(lock, target), capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"building the dependency layer failed (pip exit {proc.returncode}):\n{proc.stderr[-4000:]}")
    # Console scripts are useless in a layer; the runtime cannot write bytecode caches to /opt.
    shutil.rmtree(target / "bin", ignore_errors=True)
    for cache in target.rglob("__pycache__"):
        shutil.rmtree(cache, ignore_errors=True)
    return target


def locked_requirements(lock: Path = LAYER_LOCK) -> dict[str, str]:
    """name -> version for every package the lock pins (names normalised as pip does)."""
    pins: dict[str, str] = {}
    for line in lock.read_text().splitlines():
        match = _LOCK_LINE.match(line)
        if match:
            pins[normalise(match["name"])] = match["version"]
    return pins


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def lock_command(output: Path = LAYER_LOCK, extras: tuple[str, ...] = LAYER_EXTRAS) -> list[str]:
    """Regenerate the lock for the Lambda target from pyproject.toml (needs the package index)."""
    return [
        sys.executable,
        "-m",
        "uv",
        "pip",
        "compile",
        str(PYPROJECT),
        *(arg for extra in extras for arg in ("--extra", extra)),
        "--python-version",
        LAMBDA_PYTHON_VERSION,
        "--python-platform",
        LAMBDA_UV_PLATFORM,
        "--generate-hashes",
        "--custom-compile-command",
        "python -m infra.packaging lock",
        "--quiet",
        "--output-file",
        str(output),
    ]


@jsii.implements(ILocalBundling)
class PipLayerBundling:
    """Bundles the dependency layer on the synthesizing machine instead of in Docker."""

    def __init__(self, lock: Path = LAYER_LOCK) -> None:
        self.lock = lock

    def try_bundle(self, output_dir: str, *, image: DockerImage, **_options: Any) -> bool:
        build_layer(self.lock, Path(output_dir))
        return True  # never fall back to Docker: it is not available where Stepwise synthesizes


def dependency_layer_code(lock: Path = LAYER_LOCK) -> lambda_.Code:
    source = stage_layer_source(lock)
    return lambda_.Code.from_asset(
        str(source),
        asset_hash_type=AssetHashType.SOURCE,  # the lock, not pip's output (wheel mtimes vary)
        bundling=BundlingOptions(
            image=lambda_.Runtime.PYTHON_3_12.bundling_image,
            local=PipLayerBundling(source / LAYER_LOCK.name),
        ),
    )


def function_code(name: str) -> lambda_.Code:
    return lambda_.Code.from_asset(str(stage_function_code(name)))


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if args != ["lock"]:
        raise SystemExit("usage: python -m infra.packaging lock   (regenerates infra/layer-requirements.txt)")
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", f"uv=={UV_VERSION}"], check=True)
    subprocess.run(lock_command(), check=True)
    print(f"wrote {LAYER_LOCK.relative_to(REPO_ROOT)} ({len(locked_requirements())} packages)")


if __name__ == "__main__":
    main()
