"""One synth per committed stage per test session, shared by every infra test (a synth takes 5-30 s).

`synth` is the committed production stage (infra/stages/prod.json) exactly as an operator deploys
it; `dev_synth` the committed dev stage. Bundling is skipped (no pip run in tests).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

SKIP_BUNDLING: dict[str, Any] = {"aws:cdk:bundling-stacks": []}


@dataclass
class Synthesized:
    outdir: Path
    template: dict[str, Any]
    stack: Any
    logical_ids: dict[str, str] = field(default_factory=dict)  # function name -> logical id

    @property
    def resources(self) -> dict[str, dict[str, Any]]:
        return self.template["Resources"]

    @property
    def config(self) -> Any:
        return self.stack.config

    def of_type(self, cfn_type: str) -> dict[str, dict[str, Any]]:
        return {k: v for k, v in self.resources.items() if v["Type"] == cfn_type}

    def logical_id(self, construct: Any) -> str:
        return str(self.stack.resolve(construct.node.default_child.logical_id))

    def manifest_artifact(self, stack_name: str | None = None) -> dict[str, Any]:
        manifest = json.loads((self.outdir / "manifest.json").read_text())
        return manifest["artifacts"][stack_name or self.stack.stack_name]  # type: ignore[no-any-return]


def synthesize(context: dict[str, Any], outdir: Path) -> Synthesized:
    from infra.app import build_app

    app, stack = build_app({**SKIP_BUNDLING, **context}, outdir=str(outdir))
    app.synth()  # cdk-nag runs here: an unacknowledged finding raises
    template = json.loads((outdir / f"{stack.stack_name}.template.json").read_text())
    result = Synthesized(outdir=outdir, template=template, stack=stack)
    result.logical_ids = {name: result.logical_id(fn) for name, fn in stack.functions.functions.items()}
    return result


@pytest.fixture(scope="session")
def synth(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Synthesized]:
    yield synthesize({"stage": "prod"}, tmp_path_factory.mktemp("cdk.out.prod"))


@pytest.fixture(scope="session")
def dev_synth(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Synthesized]:
    yield synthesize({"stage": "dev"}, tmp_path_factory.mktemp("cdk.out.dev"))


@pytest.fixture(params=["prod", "dev"])
def each_stage(request: pytest.FixtureRequest) -> Synthesized:
    """Every committed stage, for checks that must hold in all of them (cdk-nag, cfn-lint)."""
    return request.getfixturevalue("synth" if request.param == "prod" else "dev_synth")  # type: ignore[no-any-return]
