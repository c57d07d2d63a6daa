"""The deployed stack and the local runtime run the same ASL file and the same functions."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from shared import constants as c
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


def test_queues_and_functions_have_the_limits_the_local_runtime_runs_with(synth: Synthesized) -> None:
    """One place (shared.limits) decides the functions' time and memory and the queues' visibility
    and receive counts: the stack deploys exactly those, and the local runtime creates the same,
    its visibility timeouts scaled by the one local factor."""
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
            scaled = max(1, round(props["VisibilityTimeout"] * limits.LOCAL_VISIBILITY_SCALE))
            assert int(attrs["VisibilityTimeout"]) == scaled, name
            # never below the consumer's time limit: nothing still running is handed out twice
            consumer = {"tasks": "task", "task-finished": "dispatch", "webhooks": "webhook"}[name]
            assert scaled >= limits.function_timeout_s(consumer, tt), name
            if name != "webhooks":
                local_receives = json.loads(attrs["RedrivePolicy"])["maxReceiveCount"]
                assert int(local_receives) == props["RedrivePolicy"]["maxReceiveCount"], name


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
