"""The metrics operators alarm on, read back from the EMF documents the functions print (namespace
`Stepwise`): names, units and dimensions, per task type and per provider."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

import pytest

from local.runtime import LocalRuntime
from tests.e2e.test_engine import STILL_CYCLIC, Engine, cyclic_pair, end_of, fast
from tests.helpers import task

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    script = tmp_path_factory.mktemp("metrics") / "script.json"
    script.write_text("{}")
    env = {"TASK_RETRY_BASE_SECONDS": "0", "ALLOW_LINEAR_FALLBACK": "false", "STEPWISE_MOCK_SCRIPT": str(script)}
    with LocalRuntime(env=env) as rt:
        from shared.observability import metrics

        saved = os.environ.get("POWERTOOLS_METRICS_DISABLED")
        os.environ["POWERTOOLS_METRICS_DISABLED"] = "false"  # the runtime turns EMF off; these tests read it
        metrics.clear_metrics()
        try:
            yield Engine(rt, script)
        finally:
            os.environ["POWERTOOLS_METRICS_DISABLED"] = saved or "true"


def emf(printed: str) -> list[dict[str, Any]]:
    """One entry per metric: name, unit, value, dimensions (name -> value)."""
    out = []
    for line in printed.splitlines():
        if not line.startswith("{") or '"_aws"' not in line:
            continue
        doc = json.loads(line)
        for directive in doc["_aws"]["CloudWatchMetrics"]:
            assert directive["Namespace"] == "Stepwise"
            dims = {d: doc[d] for group in directive["Dimensions"] for d in group}
            for metric in directive["Metrics"]:
                value = doc[metric["Name"]]  # a number, or a list of the values recorded in the set
                out.append({"name": metric["Name"], "unit": metric["Unit"],
                            "value": sum(value) if isinstance(value, list) else value, "dims": dims})
    return out


def named(metrics: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [m for m in metrics if m["name"] == name]


def test_task_provider_and_build_metrics(engine: Engine, capsys: pytest.CaptureFixture[str]) -> None:
    plan = [task("a", target="a.txt", type="setup_config"), task("b", "a", target="b.txt", type="create_component")]
    script = {"plan": {"tasks": plan}, "tasks": {"b": {"fail_attempts": 1}}, **fast()}
    bid = engine.build("metrics: two tasks", script)
    assert end_of(engine.wait_end(bid))["type"] == "build_completed"
    again = engine.build("metrics: two tasks", script)  # identical: served from the cache
    assert end_of(engine.wait_end(again))["type"] == "build_completed"
    metrics = emf(capsys.readouterr().out)

    started = named(metrics, "task.started")
    assert {(m["dims"]["taskType"], m["unit"]) for m in started} == {("setup_config", "Count"),
                                                                     ("create_component", "Count")}
    assert sum(m["value"] for m in started) == 5  # a, b twice, then the cached build's two
    [failed] = named(metrics, "task.failed")
    assert failed["dims"]["taskType"] == "create_component" and failed["unit"] == "Count"
    assert {m["dims"]["taskType"] for m in named(metrics, "task.completed")} == {"setup_config", "create_component"}
    assert {m["dims"]["taskType"] for m in named(metrics, "task.cached")} == {"setup_config", "create_component"}
    for name, unit in (("task.duration_ms", "Milliseconds"), ("task.cost_usd", "None")):
        found = named(metrics, name)
        assert found and {m["unit"] for m in found} == {unit} and all("taskType" in m["dims"] for m in found)
    for name, unit in (("tokens.prompt", "Count"), ("tokens.completion", "Count"), ("cost.usd", "None")):
        found = named(metrics, name)
        assert found and {m["unit"] for m in found} == {unit}
        assert {m["dims"]["provider"] for m in found} == {"mock"}
    assert sum(m["value"] for m in named(metrics, "tokens.prompt")) > 0
    for name, unit in (("build.duration_ms", "Milliseconds"), ("build.tasks", "Count"),
                       ("build.cost_usd", "None"), ("build.completed", "Count")):
        found = named(metrics, name)
        assert len(found) == 2 and {m["unit"] for m in found} == {unit}, name
    assert {m["value"] for m in named(metrics, "build.tasks")} == {2}


def test_plan_hard_blocked_counts_rung_e_only(engine: Engine, capsys: pytest.CaptureFixture[str]) -> None:
    script = {"plan": {"tasks": cyclic_pair()}, "heal": [json.dumps(STILL_CYCLIC)], **fast()}
    blocked = engine.build("metrics: rung d", script, requireApproval=True)
    engine.wait_event(blocked, "plan_blocked")
    rung_d = emf(capsys.readouterr().out)
    assert named(rung_d, "plan.cycles_detected")
    assert not named(rung_d, "plan.hard_blocked")  # waiting for an edit is not an upstream failure
    engine.api("POST", f"/builds/{blocked}/cancel")

    failed = engine.build("metrics: rung e", script)
    end = end_of(engine.wait_end(failed))
    assert end["type"] == "build_failed" and end["data"]["reason"] == "circular_dependencies"
    rung_e = emf(capsys.readouterr().out)
    [hard] = named(rung_e, "plan.hard_blocked")
    assert hard["unit"] == "Count" and hard["value"] == 1
