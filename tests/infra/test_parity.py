"""The deployed stack and the local runtime run the same ASL file and the same functions."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from shared import constants as c
from shared import limits
from tests.infra.conftest import Synthesized

pytestmark = [pytest.mark.infra, pytest.mark.xdist_group("infra")]  # one worker: one synth per stage
pytest.importorskip("aws_cdk", reason="infra tests need the [infra] extra (aws-cdk-lib, cdk-nag)")

REPO = Path(__file__).resolve().parents[2]


def test_stack_function_set_is_function_handlers(synth: Synthesized) -> None:
    functions = synth.of_type("AWS::Lambda::Function")
    # aws-cdk-lib's own deploy-time helper (copies the dashboard to its bucket) is not ours.
    handlers = {
        fid: f["Properties"]["Handler"]
        for fid, f in functions.items()
        if not fid.startswith("CustomCDKBucketDeployment")
    }
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


def test_layer_lock_pins_pyproject_and_its_whole_closure() -> None:
    """The lock holds pyproject's runtime pins exactly, plus every package they need on Lambda
    (walked through the installed distributions' metadata, markers evaluated for python3.12 on
    linux/aarch64), each with at least one sha256."""
    import importlib.metadata as md
    import tomllib

    from packaging.markers import default_environment
    from packaging.requirements import Requirement

    from infra.packaging import LAYER_LOCK, locked_requirements, normalise, runtime_requirements

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    reqs = runtime_requirements()
    assert reqs[: len(project["dependencies"])] == project["dependencies"]
    assert set(project["optional-dependencies"]["anthropic"]) <= set(reqs)
    locked = locked_requirements()
    for req in map(Requirement, reqs):
        assert locked.get(normalise(req.name)) == str(req.specifier).removeprefix("=="), req

    lambda_env = {
        **default_environment(),
        "python_version": "3.12",
        "python_full_version": "3.12.0",
        "platform_machine": "aarch64",
        "sys_platform": "linux",
        "platform_system": "Linux",
        "implementation_name": "cpython",
    }
    seen: set[tuple[str, frozenset[str]]] = set()
    todo = [(Requirement(r), frozenset(Requirement(r).extras)) for r in reqs]
    while todo:
        req, extras = todo.pop()
        name = normalise(req.name)
        assert name in locked, f"{name} (needed by the layer) is not in {LAYER_LOCK.name}"
        if (name, extras) in seen:
            continue
        seen.add((name, extras))
        try:
            dist = md.distribution(req.name)
        except md.PackageNotFoundError:
            continue  # not installed here (a Lambda-only wheel): its own pins were resolved by the lock
        for spec in dist.requires or []:
            child = Requirement(spec)
            wanted = [{**lambda_env, "extra": e} for e in (extras or {""})]
            if child.marker is None or any(child.marker.evaluate(env) for env in wanted):
                todo.append((child, frozenset(child.extras)))

    lines = LAYER_LOCK.read_text().splitlines()
    for i, line in enumerate(lines):
        if "==" in line and not line.startswith((" ", "#")):
            assert lines[i + 1].strip().startswith("--hash=sha256:"), line


def test_the_local_runtime_creates_what_the_stack_deploys(synth: Synthesized) -> None:
    """One description (shared.resources) makes both: every table the local runtime creates has the
    deployed key schema, indexes, stream and TTL; every queue the deployed FIFO-ness, redrive and
    visibility timeout (times the one local factor); every function the deployed time limit, which
    is what the local runtime stops it at."""
    import boto3

    from tests.integration.quiet import QuietRuntime

    settings = synth.stack.config.settings
    scale = limits.LOCAL_VISIBILITY_SCALE  # the one local factor, as the runtime runs by default
    env = {
        c.TASK_TIMEOUT_SECONDS: str(settings.task_timeout_seconds),
        c.WEBHOOK_MAX_ATTEMPTS: str(settings.webhook_max_attempts),
    }
    with QuietRuntime(env=env, visibility_scale=scale) as local:
        ddb, sqs, lam = boto3.client("dynamodb"), boto3.client("sqs"), boto3.client("lambda")

        storage = {**synth.stack.storage.tables, "connections": synth.stack.websocket.connections}
        tables = {name: synth.resources[synth.logical_id(t)]["Properties"] for name, t in storage.items()}
        assert set(tables) == {"builds", "tasks", "events", "cache", "idempotency", "connections"}
        for name, deployed in tables.items():
            table = f"stepwise-local-{name}"
            made = ddb.describe_table(TableName=table)["Table"]
            assert _keys(made["KeySchema"]) == _keys(deployed["KeySchema"]), name
            assert _attributes(made["AttributeDefinitions"]) == _attributes(deployed["AttributeDefinitions"]), name
            assert _indexes(made.get("GlobalSecondaryIndexes", [])) == _indexes(
                deployed.get("GlobalSecondaryIndexes", [])
            ), name
            stream = made.get("StreamSpecification", {})
            assert (stream.get("StreamViewType") if stream.get("StreamEnabled") else None) == deployed.get(
                "StreamSpecification", {}
            ).get("StreamViewType"), name
            ttl = ddb.describe_time_to_live(TableName=table)["TimeToLiveDescription"]
            local_ttl = ttl.get("AttributeName") if ttl["TimeToLiveStatus"] == "ENABLED" else None
            deployed_ttl = deployed.get("TimeToLiveSpecification", {})
            assert local_ttl == (deployed_ttl.get("AttributeName") if deployed_ttl.get("Enabled") else None), name

        queues = {name: synth.logical_id(q) for name, q in synth.stack.queues.by_name.items()}
        name_of_id = {fid: name for name, fid in queues.items()}
        # The outbox pipe's dead-letter queue is the only one the local runtime does not need.
        deployed_queues = {
            f"{name}.fifo" if synth.resources[fid]["Properties"].get("FifoQueue") else name: fid
            for name, fid in queues.items()
            if name != "outbox-dlq"
        }
        assert set(local.resources.queues) == set(deployed_queues)
        for name, fid in deployed_queues.items():
            deployed = synth.resources[fid]["Properties"]
            url = local.resources.queues[name]
            made = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
            assert (made.get("FifoQueue") == "true") == bool(deployed.get("FifoQueue")), name
            if "VisibilityTimeout" in deployed:
                assert int(made["VisibilityTimeout"]) == max(1, round(deployed["VisibilityTimeout"] * scale)), name
                consumer = {"tasks": "task", "task-finished.fifo": "dispatch", "webhooks": "webhook"}.get(name)
                if consumer:  # never below the consumer's time limit: nothing still running is handed out twice
                    assert int(made["VisibilityTimeout"]) >= limits.function_timeout_s(
                        consumer, settings.task_timeout_seconds
                    ), name
            else:
                assert int(made["VisibilityTimeout"]) == 30, name  # the SQS default, on both sides
            if "RedrivePolicy" in deployed:
                redrive = json.loads(made["RedrivePolicy"])
                target = redrive["deadLetterTargetArn"].rsplit(":", 1)[-1].removeprefix("stepwise-local-")
                deployed_target = name_of_id[deployed["RedrivePolicy"]["deadLetterTargetArn"]["Fn::GetAtt"][0]]
                assert target.removesuffix(".fifo") == deployed_target, name
                assert int(redrive["maxReceiveCount"]) == deployed["RedrivePolicy"]["maxReceiveCount"], name
            else:
                assert "RedrivePolicy" not in made, name

        for name, fid in synth.logical_ids.items():
            deployed = synth.resources[fid]["Properties"]
            made = lam.get_function_configuration(FunctionName=f"stepwise-local-{name}")
            assert (made["Timeout"], made["MemorySize"]) == (deployed["Timeout"], deployed["MemorySize"]), name
            enforced = local.functions[name]
            assert (enforced.timeout_s, enforced.memory_mb) == (deployed["Timeout"], deployed["MemorySize"]), name


def _keys(schema: list[dict[str, str]]) -> list[tuple[str, str]]:
    return [(k["AttributeName"], k["KeyType"]) for k in schema]


def _attributes(definitions: list[dict[str, str]]) -> set[tuple[str, str]]:
    return {(a["AttributeName"], a["AttributeType"]) for a in definitions}


def _indexes(indexes: list[dict[str, Any]]) -> dict[str, tuple[list[tuple[str, str]], str]]:
    return {i["IndexName"]: (_keys(i["KeySchema"]), i["Projection"]["ProjectionType"]) for i in indexes}


def _layer_s3_key(lock: Path) -> str:
    from aws_cdk import App, Stack
    from aws_cdk import aws_lambda as lambda_

    from infra.packaging import dependency_layer_code

    app = App(context={"aws:cdk:bundling-stacks": []})
    stack = Stack(app, "LayerOnly")
    lambda_.LayerVersion(stack, "Layer", code=dependency_layer_code(lock))
    (layer,) = app.synth().get_stack_by_name("LayerOnly").template["Resources"].values()
    return str(layer["Properties"]["Content"]["S3Key"])


def test_layer_asset_hash_follows_the_lock(synth: Synthesized, tmp_path: Path) -> None:
    from infra.packaging import LAYER_LOCK

    same = tmp_path / "same" / LAYER_LOCK.name
    same.parent.mkdir()
    same.write_text(LAYER_LOCK.read_text())
    changed = tmp_path / "changed" / LAYER_LOCK.name
    changed.parent.mkdir()
    changed.write_text(LAYER_LOCK.read_text().replace("six==1.17.0", "six==1.16.0"))

    # aws-cdk-lib's BucketDeployment brings its own AWS CLI layer; ours is the dependency layer.
    (deployed,) = [v for k, v in synth.of_type("AWS::Lambda::LayerVersion").items() if "AwsCliLayer" not in k]
    assert _layer_s3_key(same) == deployed["Properties"]["Content"]["S3Key"]
    assert _layer_s3_key(changed) != deployed["Properties"]["Content"]["S3Key"]
