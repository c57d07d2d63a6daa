"""cdk-nag (AwsSolutions) and cfn-lint on the synthesized app."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.infra.conftest import Synthesized

pytestmark = [pytest.mark.infra, pytest.mark.xdist_group("infra")]  # one worker: one synth per stage
pytest.importorskip("aws_cdk", reason="infra tests need the [infra] extra (aws-cdk-lib, cdk-nag)")

ACK_PREFIX = "AwsSolutions::"


def _report(synth: Synthesized) -> dict:
    return json.loads((synth.outdir / "validation-report.json").read_text())


def _nag(synth: Synthesized) -> dict:
    """cdk-nag's report. Besides it, the report holds the construct annotations when there are any:
    in a checkout whose web/dist was never built, the dashboard's placeholder warning (nothing else)."""
    reports = {r["pluginName"]: r for r in _report(synth)["pluginReports"]}
    others = [v for name, r in reports.items() if name != "AwsSolutions" for v in r.get("violations", [])]
    assert [v["ruleName"] for v in others] in ([], ["Annotation::stepwise:dashboard-not-built"]), others
    return reports["AwsSolutions"]


def _acknowledgements(synth: Synthesized) -> dict[tuple[str, str], str]:
    """(construct path, acknowledged id) -> reason, from the cloud assembly's metadata."""
    metadata: dict[str, list[dict]] = {}
    for stack_metadata in synth.outdir.glob("*.metadata.json"):  # the stage's stack and the account's
        metadata.update(json.loads(stack_metadata.read_text()))
    out = {}
    for path, entries in metadata.items():
        for entry in entries:
            if entry["type"] == "aws:cdk:acknowledged-rules":
                for rule_id, reason in entry["data"].items():
                    out[(path.lstrip("/"), rule_id)] = reason
    return out


def test_cdk_nag_has_zero_unacknowledged_findings(each_stage: Synthesized) -> None:
    synth = each_stage
    # The synth in the fixture would have raised on a finding; the report says so explicitly too.
    plugin = _nag(synth)
    assert plugin["conclusion"] == "success"
    assert plugin["violations"] == []


def test_every_acknowledgement_is_specific_and_used(each_stage: Synthesized) -> None:
    synth = each_stage
    acks = _acknowledgements(synth)
    assert acks, "expected a few written acknowledgements"
    for (path, rule_id), reason in acks.items():
        assert rule_id.startswith(ACK_PREFIX + "AwsSolutions-"), (path, rule_id)
        assert len(reason) >= 60, f"{path} {rule_id}: reason too vague: {reason!r}"
    plugin = _nag(synth)
    used = {(s["acknowledgedAt"], s["acknowledgedId"]) for s in plugin["suppressedViolations"]}
    stale = set(acks) - used
    assert not stale, f"acknowledgements that suppress nothing (remove them): {sorted(stale)}"


def test_cfn_lint_reports_no_errors(each_stage: Synthesized) -> None:
    from cfnlint.api import ManualArgs, lint_file

    templates = sorted(each_stage.outdir.glob("*.template.json"))
    assert len(templates) == 2  # the stage's stack and the account's API Gateway logging stack
    for template in templates:
        matches = lint_file(Path(template), config=ManualArgs(ignore_checks=["W3005"]))
        problems = [str(m) for m in matches if m.rule.id.startswith(("E", "W"))]
        assert problems == [], template.name
