"""One synth per test session, shared by every infra test (a synth takes 5-11 s)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

# Deployment context the tests synthesize with; bundling is skipped (no pip run in tests).
TEST_CONTEXT: dict[str, Any] = {
    "aws:cdk:bundling-stacks": [],
    "frontendOrigin": "https://app.example.com",
    "alarmEmail": "ops@example.com",
    "costAlarmUsdPerHour": 7.5,
    "aiProvider": "anthropic",
}


@dataclass
class Synthesized:
    outdir: Path
    template: dict[str, Any]
    stack: Any
    logical_ids: dict[str, str] = field(default_factory=dict)  # function name -> logical id

    @property
    def resources(self) -> dict[str, dict[str, Any]]:
        return self.template["Resources"]

    def of_type(self, cfn_type: str) -> dict[str, dict[str, Any]]:
        return {k: v for k, v in self.resources.items() if v["Type"] == cfn_type}

    def logical_id(self, construct: Any) -> str:
        return str(self.stack.resolve(construct.node.default_child.logical_id))


@pytest.fixture(scope="session")
def synth(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Synthesized]:
    from infra.app import build_app

    outdir = tmp_path_factory.mktemp("cdk.out")
    app, stack = build_app(TEST_CONTEXT, outdir=str(outdir))
    app.synth()  # cdk-nag runs here: an unacknowledged finding raises
    template = json.loads((outdir / f"{stack.stack_name}.template.json").read_text())
    result = Synthesized(outdir=outdir, template=template, stack=stack)
    result.logical_ids = {name: result.logical_id(fn) for name, fn in stack.functions.functions.items()}
    yield result
