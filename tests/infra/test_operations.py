"""What an operator relies on in a real account: alarms that reach someone, loops that are not
stopped, committed per-stage configuration, protections in production, Bedrock IAM."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path
from typing import Any

import pytest

from shared import constants as c
from tests.infra.conftest import Synthesized
from tests.infra.test_stack import as_list, ids, refs, role_of, statements_of

pytestmark = [pytest.mark.infra, pytest.mark.xdist_group("infra")]  # one worker: one synth per stage
pytest.importorskip("aws_cdk", reason="infra tests need the [infra] extra (aws-cdk-lib, cdk-nag)")

REPO = Path(__file__).resolve().parents[2]


# --- alarms reach someone ------------------------------------------------------------------------
def test_alarm_topic_lets_cloudwatch_publish_from_this_account_only(synth: Synthesized) -> None:
    topic_id = ids(synth, synth.stack.monitoring.topic)
    (policy,) = synth.of_type("AWS::SNS::TopicPolicy").values()
    assert refs(policy["Properties"]["Topics"]) == {topic_id}
    statements = policy["Properties"]["PolicyDocument"]["Statement"]
    allow = [s for s in statements if s["Effect"] == "Allow"]
    assert len(allow) == 1
    (st,) = allow
    assert st["Principal"] == {"Service": "cloudwatch.amazonaws.com"}
    assert st["Action"] == "sns:Publish"
    assert refs(st["Resource"]) == {topic_id}
    assert st["Condition"]["StringEquals"]["aws:SourceAccount"] == {"Ref": "AWS::AccountId"}
    source_arn = json.dumps(st["Condition"]["ArnLike"]["aws:SourceArn"])
    assert ":cloudwatch:" in source_arn and ":alarm:*" in source_arn and "AWS::AccountId" in source_arn
    # enforce_ssl's deny is still there beside it.
    assert any(
        s["Effect"] == "Deny" and s["Condition"] == {"Bool": {"aws:SecureTransport": "false"}} for s in statements
    )


# --- recursion -----------------------------------------------------------------------------------
def test_task_and_dispatch_allow_their_designed_loops(synth: Synthesized) -> None:
    loops = {n: synth.resources[i]["Properties"].get("RecursiveLoop") for n, i in synth.logical_ids.items()}
    assert loops == {
        "task": "Allow",
        "dispatch": "Allow",
        "api": "Terminate",
        "plan": "Terminate",
        "webhook": "Terminate",
    }


# --- alarms --------------------------------------------------------------------------------------
def _alarms(synth: Synthesized) -> list[dict[str, Any]]:
    return [a["Properties"] for a in synth.of_type("AWS::CloudWatch::Alarm").values()]


def _math_metrics(alarm: dict[str, Any]) -> list[dict[str, Any]]:
    return [m["MetricStat"]["Metric"] for m in alarm.get("Metrics", []) if "MetricStat" in m]


def test_every_alarm_notifies_the_topic_on_alarm_and_ok(synth: Synthesized) -> None:
    topic_id = ids(synth, synth.stack.monitoring.topic)
    for alarm in _alarms(synth):
        assert refs(alarm["AlarmActions"]) == {topic_id}
        assert refs(alarm["OKActions"]) == {topic_id}


def test_oldest_message_age_alarms_on_each_work_queue(synth: Synthesized) -> None:
    from infra.stack import queue_age_thresholds

    q = synth.stack.queues
    ages = {
        next(iter(refs(a["Dimensions"]))): a["Threshold"]
        for a in _alarms(synth)
        if a.get("MetricName") == "ApproximateAgeOfOldestMessage"
    }
    thresholds = queue_age_thresholds(synth.config)
    assert ages == {
        ids(synth, q.tasks): thresholds["tasks"],
        ids(synth, q.task_finished): thresholds["task-finished"],
        ids(synth, q.webhooks): thresholds["webhooks"],
    }
    # A webhook event legitimately waits through its retry schedule while a receiver is down.
    assert thresholds["webhooks"] > thresholds["tasks"] == synth.config.deployment.queue_age_alarm_seconds


def test_throttle_and_recursion_alarms_cover_every_function(synth: Synthesized) -> None:
    alarms = _alarms(synth)
    watched = {ids(synth, fn) for fn in synth.stack.monitoring.functions.values()}
    assert set(synth.logical_ids.values()) <= watched  # the five, and any function added beside them
    throttled = {next(iter(refs(a["Dimensions"]))) for a in alarms if a.get("MetricName") == "Throttles"}
    assert throttled == watched
    (recursion,) = [
        a for a in alarms if any(m["MetricName"] == "RecursiveInvocationsDropped" for m in _math_metrics(a))
    ]
    covered = {fid for m in _math_metrics(recursion) for fid in refs(m["Dimensions"])}
    assert covered == watched
    assert recursion["Threshold"] == 0 and recursion["ComparisonOperator"] == "GreaterThanThreshold"


def test_step_functions_pipe_and_dynamodb_alarms(synth: Synthesized) -> None:
    alarms = _alarms(synth)
    sm_id = ids(synth, synth.stack.workflow.state_machine)
    by_metric = {a["MetricName"]: a for a in alarms if "MetricName" in a}
    for name in ("ExecutionsTimedOut", "ExecutionThrottled"):
        assert refs(by_metric[name]["Dimensions"]) == {sm_id}, name
        assert by_metric[name]["Threshold"] == 0

    pipe_id = str(synth.stack.resolve(synth.stack.outbox.pipe.logical_id))
    (pipe_alarm,) = [a for a in alarms if any(m["Namespace"] == "AWS/EventBridge/Pipes" for m in _math_metrics(a))]
    assert {m["MetricName"] for m in _math_metrics(pipe_alarm)} == {"ExecutionFailed", "TargetStageFailed"}
    assert all(refs(m["Dimensions"]) == {pipe_id} for m in _math_metrics(pipe_alarm))

    table_alarms = [a for a in alarms if any(m["Namespace"] == "AWS/DynamoDB" for m in _math_metrics(a))]
    covered = {next(iter(refs(m["Dimensions"]))) for a in table_alarms for m in _math_metrics(a)}
    assert covered == {ids(synth, t) for t in synth.stack.storage.tables.values()}
    for a in table_alarms:
        assert {m["MetricName"] for m in _math_metrics(a)} == {"ReadThrottleEvents", "WriteThrottleEvents"}


# --- webhook batches -----------------------------------------------------------------------------
def test_one_slow_receiver_cannot_time_out_a_webhook_batch(synth: Synthesized) -> None:
    from shared.webhooks.delivery import DELIVERY_TIMEOUT_S

    webhook_id = synth.logical_ids["webhook"]
    timeout = synth.resources[webhook_id]["Properties"]["Timeout"]
    (mapping,) = [
        m["Properties"]
        for m in synth.of_type("AWS::Lambda::EventSourceMapping").values()
        if m["Properties"]["FunctionName"] == {"Ref": webhook_id}
    ]
    batch = mapping["BatchSize"]
    assert timeout >= batch * DELIVERY_TIMEOUT_S + 10  # every delivery at its limit, plus signing/DNS
    assert mapping["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    queue = synth.resources[ids(synth, synth.stack.queues.webhooks)]["Properties"]
    assert queue["VisibilityTimeout"] >= 6 * timeout


# --- concurrency ---------------------------------------------------------------------------------
def test_reserved_concurrency_for_dispatch_and_plan_with_event_source_below_it(synth: Synthesized) -> None:
    d = synth.config.deployment
    reserved = {
        n: synth.resources[i]["Properties"].get("ReservedConcurrentExecutions") for n, i in synth.logical_ids.items()
    }
    assert reserved == {
        "api": None,
        "plan": d.plan_reserved_concurrency,  # the cap on plans in flight
        "dispatch": d.dispatch_reserved_concurrency,
        "task": None,
        "webhook": None,
    }
    dispatch_id = synth.logical_ids["dispatch"]
    caps = [
        m["Properties"]["ScalingConfig"]["MaximumConcurrency"]
        for m in synth.of_type("AWS::Lambda::EventSourceMapping").values()
        if m["Properties"]["FunctionName"] == {"Ref": dispatch_id}
    ]
    # Event sources that could outgrow the reservation would be throttled, spending receives.
    assert sum(caps) < d.dispatch_reserved_concurrency


# --- Cognito client ------------------------------------------------------------------------------
def test_cognito_client_has_explicit_code_flow_scopes_and_stage_urls(synth: Synthesized) -> None:
    (client,) = synth.of_type("AWS::Cognito::UserPoolClient").values()
    props = client["Properties"]
    assert props["AllowedOAuthFlows"] == ["code"]  # no implicit grant (CDK's default adds it)
    assert sorted(props["AllowedOAuthScopes"]) == ["email", "openid", "profile"]
    # The configured URLs, then the dashboard's (tests/infra/test_dashboard.py).
    assert props["CallbackURLs"][:-1] == list(synth.config.callback_urls)
    assert props["LogoutURLs"][:-1] == list(synth.config.logout_urls)
    assert all(u.startswith("https://") for u in props["CallbackURLs"][:-1])
    assert props["SupportedIdentityProviders"] == ["COGNITO"]
    assert props["GenerateSecret"] is False
    assert set(props["ExplicitAuthFlows"]) == {"ALLOW_USER_SRP_AUTH", "ALLOW_REFRESH_TOKEN_AUTH"}
    (domain,) = synth.of_type("AWS::Cognito::UserPoolDomain").values()
    assert domain["Properties"]["Domain"] == synth.config.deployment.auth_domain_prefix
    assert "SignInDomain" in synth.template["Outputs"]


# --- API Gateway account role --------------------------------------------------------------------
def test_api_gateway_logging_role_is_one_shared_retained_stack(synth: Synthesized) -> None:
    from infra.account import API_GATEWAY_ACCOUNT_STACK

    assert not synth.of_type("AWS::ApiGateway::Account")
    assert not [r for r in synth.of_type("AWS::IAM::Role").values() if "apigateway" in json.dumps(r)]
    account = json.loads((synth.outdir / f"{API_GATEWAY_ACCOUNT_STACK}.template.json").read_text())
    kinds = sorted(r["Type"] for r in account["Resources"].values())
    assert kinds == ["AWS::ApiGateway::Account", "AWS::IAM::Role"]
    assert all(r["DeletionPolicy"] == "Retain" for r in account["Resources"].values())
    assert API_GATEWAY_ACCOUNT_STACK in synth.manifest_artifact()["dependencies"]
    # Same environment as the stage, so the stage's dependency can be deployed with it.
    assert synth.manifest_artifact(API_GATEWAY_ACCOUNT_STACK)["environment"] == synth.manifest_artifact()["environment"]


# --- per-stage configuration ---------------------------------------------------------------------
def test_prod_is_pinned_and_protected(synth: Synthesized) -> None:
    d = synth.config.deployment
    artifact = synth.manifest_artifact()
    assert artifact["environment"] == f"aws://{d.account}/{d.region}"
    assert artifact["properties"]["terminationProtection"] is True
    for table in synth.stack.storage.tables.values():
        assert synth.resources[ids(synth, table)]["Properties"]["DeletionProtectionEnabled"] is True
    (pool,) = synth.of_type("AWS::Cognito::UserPool").values()
    assert pool["Properties"]["DeletionProtection"] == "ACTIVE"
    assert pool["DeletionPolicy"] == "Retain"


def test_dev_is_unprotected_logs_everything_and_is_a_different_stack(
    dev_synth: Synthesized, synth: Synthesized
) -> None:
    assert dev_synth.stack.stack_name != synth.stack.stack_name  # a dev deploy never touches prod
    artifact = dev_synth.manifest_artifact()
    assert artifact["environment"] == "aws://unknown-account/unknown-region"
    assert not artifact["properties"].get("terminationProtection")
    for table in dev_synth.stack.storage.tables.values():
        assert dev_synth.resources[ids(dev_synth, table)]["Properties"].get("DeletionProtectionEnabled") in (
            None,
            False,
        )
    (sm,) = dev_synth.of_type("AWS::StepFunctions::StateMachine").values()
    assert sm["Properties"]["LoggingConfiguration"]["Level"] == "ALL"
    assert sm["Properties"]["LoggingConfiguration"]["IncludeExecutionData"] is True
    env = dev_synth.resources[dev_synth.logical_ids["plan"]]["Properties"]["Environment"]["Variables"]
    assert env[c.AI_PROVIDER] == "bedrock"


def _write_stage(tmp_path: Path, name: str, **changes: Any) -> Path:
    stage = json.loads((REPO / "infra" / "stages" / "prod.json").read_text())
    for key, value in changes.items():
        if value is None:
            stage.pop(key, None)
        else:
            stage[key] = value
    (tmp_path / f"{name}.json").write_text(json.dumps(stage))
    return tmp_path


@pytest.mark.parametrize(
    ("changes", "named"),
    [
        ({"aiProvider": "mock"}, "aiProvider"),
        ({"frontendOrigin": "http://localhost:3000"}, "frontendOrigin"),
        ({"frontendOrigin": "http://app.example.com"}, "frontendOrigin"),
        ({"alarmEmail": None}, "alarmEmail"),
        ({"account": None}, "account"),
        ({"region": None}, "region"),
        ({"callbackUrls": ["http://localhost:5173/"]}, "callbackUrls"),
        ({"taskTimeoutSeconds": 870}, "taskTimeoutSeconds"),
        ({"bedrockModelId": "eu.anthropic.claude-sonnet-4-5-20250929-v1:0"}, "bedrockModelId"),
        ({"bedrockModelId": "meta.llama3-70b-instruct-v1:0"}, "bedrockModelId"),
        ({"dispatchReservedConcurrency": 3}, "dispatchReservedConcurrency"),
        ({"alarmEmial": "typo@example.com"}, "alarmEmial"),
    ],
)
def test_a_bad_prod_setting_fails_synth_naming_it(tmp_path: Path, changes: dict[str, Any], named: str) -> None:
    from infra.app import build_app
    from infra.config import ConfigError

    stages = _write_stage(tmp_path, "prod", **changes)
    with pytest.raises(ConfigError, match=named):
        build_app({"stage": "prod"}, outdir=str(tmp_path / "out"), stages_dir=stages)


def test_prod_takes_no_command_line_overrides_but_dev_does() -> None:
    from infra.config import ConfigError, StackConfig

    with pytest.raises(ConfigError, match=r"aiProvider.*infra/stages/prod\.json"):
        StackConfig.from_stage("prod", {"aiProvider": "anthropic"})
    assert StackConfig.from_stage("dev", {"aiProvider": "mock"}).settings.ai_provider == "mock"
    with pytest.raises(ConfigError, match="stage"):
        StackConfig.from_stage("staging")


def test_cdk_json_selects_dev_and_holds_only_the_stage_and_feature_flags() -> None:
    context = json.loads((REPO / "cdk.json").read_text())["context"]
    assert context.pop("stage") == "dev"
    assert all(k.startswith("@aws-cdk") for k in context), "settings belong in infra/stages/*.json"


def test_cdk_json_sets_every_recommended_feature_flag() -> None:
    import aws_cdk

    tarball = next((Path(aws_cdk.__file__).parent / "_jsii").glob("aws-cdk-lib@*.jsii.tgz"))
    with tarfile.open(tarball) as tar:
        member = tar.extractfile("package/recommended-feature-flags.json")
        assert member is not None
        recommended = json.loads(member.read())
    context = json.loads((REPO / "cdk.json").read_text())["context"]
    assert {k: context.get(k) for k in recommended} == recommended


# --- Bedrock IAM ---------------------------------------------------------------------------------
def test_bedrock_invoke_is_granted_on_the_configured_model_only(synth: Synthesized) -> None:
    model = synth.config.settings.bedrock_model_id
    base = model.split(".", 1)[1]
    for name in c.FUNCTION_HANDLERS:
        statements = [
            s
            for s in statements_of(synth, role_of(synth, synth.logical_ids[name]))
            if "bedrock" in json.dumps(s["Action"])
        ]
        if name not in ("plan", "task"):
            assert statements == [], name
            continue
        assert len(statements) == 2, name
        for st in statements:
            assert sorted(as_list(st["Action"])) == ["bedrock:InvokeModel", "bedrock:InvokeModelWithResponseStream"]
        profile, foundation = sorted(statements, key=lambda s: "Condition" in s)
        assert profile["Resource"] == {
            "Fn::Sub": f"arn:${{AWS::Partition}}:bedrock:${{AWS::Region}}:${{AWS::AccountId}}:inference-profile/{model}"
        }
        assert foundation["Resource"] == {"Fn::Sub": f"arn:${{AWS::Partition}}:bedrock:*::foundation-model/{base}"}
        assert foundation["Condition"] == {"StringEquals": {"bedrock:InferenceProfileArn": profile["Resource"]}}


def test_bedrock_arns_for_a_plain_model_id_name_one_regional_model() -> None:
    from infra.constructs.functions import bedrock_resource_arns

    direct, via = bedrock_resource_arns("anthropic.claude-3-5-haiku-20241022-v1:0")
    assert direct == [
        "arn:${AWS::Partition}:bedrock:${AWS::Region}::foundation-model/anthropic.claude-3-5-haiku-20241022-v1:0"
    ]
    assert via == []


def test_no_provider_key_needed_for_bedrock_and_no_bedrock_grant_for_other_providers() -> None:
    from infra.config import StackConfig

    assert StackConfig.from_stage("dev", {"aiProvider": "anthropic"}).settings.ai_provider == "anthropic"
    # the grant is conditional on the provider (checked on the synthesized prod stage above)


# --- what `cdk destroy` keeps (infra/README.md, runbook step 7) ------------------------------------
def test_destroy_keeps_data_identity_secrets_and_logs(synth: Synthesized) -> None:
    kept = sorted({r["Type"] for r in synth.resources.values() if r.get("DeletionPolicy") == "Retain"})
    assert kept == [
        "AWS::Cognito::UserPool",
        "AWS::DynamoDB::Table",
        "AWS::KMS::Key",
        "AWS::Logs::LogGroup",
        "AWS::S3::Bucket",
        "AWS::SecretsManager::Secret",
    ]
    retained_tables = {k for k, r in synth.of_type("AWS::DynamoDB::Table").items() if r["DeletionPolicy"] == "Retain"}
    assert retained_tables == {ids(synth, t) for t in synth.stack.storage.tables.values()}  # not the connections
    # Named log groups (vendedlogs) go with the stack, or a re-deploy would collide with them.
    named = [r for r in synth.of_type("AWS::Logs::LogGroup").values() if "LogGroupName" in r["Properties"]]
    assert named and all(r["DeletionPolicy"] == "Delete" for r in named)


def test_an_api_key_provider_reads_the_provider_secret_and_gets_no_bedrock_grant() -> None:
    from aws_cdk.assertions import Template

    from infra.app import build_app

    _, stack = build_app({"aws:cdk:bundling-stacks": [], "aiProvider": "anthropic"}, nag=False)
    template = Template.from_stack(stack).to_json()
    secret_id = stack.resolve(stack.secrets.providers.node.default_child.logical_id)
    for name, fn in stack.functions.functions.items():
        props = template["Resources"][stack.resolve(fn.node.default_child.logical_id)]["Properties"]
        role_id = props["Role"]["Fn::GetAtt"][0]
        statements = [
            st
            for policy in template["Resources"].values()
            if policy["Type"] == "AWS::IAM::Policy" and {"Ref": role_id} in policy["Properties"]["Roles"]
            for st in policy["Properties"]["PolicyDocument"]["Statement"]
        ]
        reads_secret = any(
            "secretsmanager:GetSecretValue" in as_list(st["Action"]) and refs(st["Resource"]) == {secret_id}
            for st in statements
        )
        assert reads_secret == (name in ("plan", "task")), name
        assert (c.PROVIDER_SECRET_ARN in props["Environment"]["Variables"]) == (name in ("plan", "task")), name
        assert "bedrock" not in json.dumps(statements), name
