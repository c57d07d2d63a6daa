"""The deployed stack and the local runtime run the same ASL file and the same functions."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from shared import constants as c
from tests.infra.conftest import Synthesized

pytestmark = pytest.mark.infra
pytest.importorskip("aws_cdk", reason="infra tests need the [infra] extra (aws-cdk-lib, cdk-nag)")

REPO = Path(__file__).resolve().parents[2]


def test_stack_function_set_is_function_handlers(synth: Synthesized) -> None:
    functions = synth.of_type("AWS::Lambda::Function")
    handlers = {fid: f["Properties"]["Handler"] for fid, f in functions.items()}
    assert sorted(handlers.values()) == sorted([*c.FUNCTION_HANDLERS.values(), *c.WEBSOCKET_FUNCTION_HANDLERS.values()])
    assert {name: handlers[fid] for name, fid in synth.logical_ids.items()} == c.FUNCTION_HANDLERS


def test_stack_and_local_runtime_share_the_asl_file() -> None:
    from infra.constructs.workflow import ASL_PATH

    assert REPO / "infra" / "statemachine.asl.json" == ASL_PATH
    json.loads(ASL_PATH.read_text())  # well-formed
    runtime = REPO / "local" / "runtime.py"
    if not runtime.exists():
        pytest.skip("local/runtime.py is not written yet")
    source = runtime.read_text()
    assert "statemachine.asl.json" in source or "ASL_PATH" in source, (
        "the local runtime must load infra/statemachine.asl.json"
    )
    assert "FUNCTION_HANDLERS" in source, "the local runtime must build its function set from FUNCTION_HANDLERS"


def test_function_assets_hold_only_what_the_function_imports(synth: Synthesized) -> None:
    functions = synth.of_type("AWS::Lambda::Function")
    for name, fid in synth.logical_ids.items():
        s3_key = functions[fid]["Properties"]["Code"]["S3Key"]  # "<asset hash>.zip"
        root = synth.outdir / f"asset.{s3_key.removesuffix('.zip')}"
        assert sorted(p.name for p in root.iterdir()) == ["functions", "shared"]
        assert sorted(p.name for p in (root / "functions").iterdir()) == ["__init__.py", name]
        assert not list(root.rglob("__pycache__"))
        assert (root / "shared" / "constants.py").exists()


def test_layer_pins_come_from_pyproject() -> None:
    import tomllib

    from infra.packaging import runtime_requirements

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    reqs = runtime_requirements()
    assert reqs[: len(project["dependencies"])] == project["dependencies"]
    assert set(project["optional-dependencies"]["anthropic"]) <= set(reqs)
    assert all("==" in r for r in reqs)


def test_queues_and_functions_have_the_limits_the_local_runtime_runs_with(synth: Synthesized) -> None:
    """One place (shared.limits) decides the functions' time and memory and the queues' visibility
    and receive counts: the stack deploys exactly those, and the local runtime creates the same."""
    from shared import limits
    from tests.infra.test_stack import ids
    from tests.integration.quiet import QuietRuntime

    tt = synth.stack.config.settings.task_timeout_seconds
    for name, fid in synth.logical_ids.items():
        props = synth.resources[fid]["Properties"]
        assert (props["Timeout"], props["MemorySize"]) == (
            limits.function_timeout_s(name, tt),
            limits.FUNCTION_MEMORY_MB[name],
        )
    q = synth.stack.queues
    deployed = {
        name: synth.resources[ids(synth, queue)]["Properties"]
        for name, queue in {"tasks": q.tasks, "task-finished": q.task_finished, "webhooks": q.webhooks}.items()
    }
    with QuietRuntime(env={c.TASK_TIMEOUT_SECONDS: str(tt)}) as local:
        import boto3

        sqs = boto3.client("sqs")
        for name, props in deployed.items():
            assert props["VisibilityTimeout"] == limits.queue_visibility_s(name, tt)
            url = local.resources.queues[name if name != "task-finished" else "task-finished.fifo"]
            attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
            assert int(attrs["VisibilityTimeout"]) == props["VisibilityTimeout"], name
            if name != "webhooks":
                local_receives = json.loads(attrs["RedrivePolicy"])["maxReceiveCount"]
                assert int(local_receives) == props["RedrivePolicy"]["maxReceiveCount"], name
