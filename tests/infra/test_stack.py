"""Assertions on the synthesized template's real properties."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from shared import constants as c
from tests.infra.conftest import Synthesized

pytestmark = [pytest.mark.infra, pytest.mark.xdist_group("infra")]  # one worker: one synth per stage
pytest.importorskip("aws_cdk", reason="infra tests need the [infra] extra (aws-cdk-lib, cdk-nag)")


def refs(value: Any) -> set[str]:
    """Logical ids a template value points at (Ref / Fn::GetAtt), recursively."""
    found: set[str] = set()
    if isinstance(value, dict):
        if "Ref" in value and isinstance(value["Ref"], str) and not value["Ref"].startswith("AWS::"):
            found.add(value["Ref"])
        if "Fn::GetAtt" in value:
            found.add(value["Fn::GetAtt"][0])
        for v in value.values():
            found |= refs(v)
    elif isinstance(value, list):
        for v in value:
            found |= refs(v)
    return found


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def statements_of(synth: Synthesized, role_id: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for policy in synth.of_type("AWS::IAM::Policy").values():
        if {"Ref": role_id} in policy["Properties"].get("Roles", []):
            out.extend(policy["Properties"]["PolicyDocument"]["Statement"])
    return out


def role_of(synth: Synthesized, function_id: str) -> str:
    return synth.resources[function_id]["Properties"]["Role"]["Fn::GetAtt"][0]


def ids(synth: Synthesized, construct: Any) -> str:
    return synth.logical_id(construct)


# --- storage -------------------------------------------------------------------------------------
TABLE_KEYS = {
    "builds": ([("buildId", "HASH")], {"buildId": "S", "ownerId": "S", "createdAt": "N"}),
    "tasks": ([("buildId", "HASH"), ("taskId", "RANGE")], {"buildId": "S", "taskId": "S"}),
    "events": ([("buildId", "HASH"), ("seq", "RANGE")], {"buildId": "S", "seq": "N"}),
    "cache": ([("cacheKey", "HASH")], {"cacheKey": "S"}),
    "idempotency": ([("id", "HASH")], {"id": "S"}),
}


@pytest.mark.parametrize("name", sorted(TABLE_KEYS))
def test_table_schema_billing_pitr_encryption(synth: Synthesized, name: str) -> None:
    table = synth.resources[ids(synth, synth.stack.storage.tables[name])]["Properties"]
    keys, attributes = TABLE_KEYS[name]
    assert [(k["AttributeName"], k["KeyType"]) for k in table["KeySchema"]] == keys
    assert {a["AttributeName"]: a["AttributeType"] for a in table["AttributeDefinitions"]} == attributes
    assert table["BillingMode"] == "PAY_PER_REQUEST"
    assert table["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"] is True
    assert table["SSESpecification"] == {"SSEEnabled": True}  # AWS-managed KMS key (aws/dynamodb)
    assert synth.resources[ids(synth, synth.stack.storage.tables[name])]["DeletionPolicy"] == "Retain"


def test_table_ttl_stream_and_index(synth: Synthesized) -> None:
    storage = synth.stack.storage
    props = {n: synth.resources[ids(synth, t)]["Properties"] for n, t in storage.tables.items()}
    for name in ("builds", "tasks", "events", "cache"):  # RECORD_TTL_DAYS: they expire together
        assert props[name]["TimeToLiveSpecification"] == {"AttributeName": "expiresAt", "Enabled": True}, name
    assert props["idempotency"]["TimeToLiveSpecification"] == {"AttributeName": "expiration", "Enabled": True}
    assert props["events"]["StreamSpecification"] == {"StreamViewType": "NEW_IMAGE"}
    assert all("StreamSpecification" not in p for n, p in props.items() if n != "events")
    (gsi,) = props["builds"]["GlobalSecondaryIndexes"]
    assert gsi["IndexName"] == "byOwner"
    assert [(k["AttributeName"], k["KeyType"]) for k in gsi["KeySchema"]] == [
        ("ownerId", "HASH"),
        ("createdAt", "RANGE"),
    ]


def test_files_bucket_is_private_encrypted_tls_only_and_expires(synth: Synthesized) -> None:
    bucket_id = ids(synth, synth.stack.storage.files)
    bucket = synth.resources[bucket_id]["Properties"]
    (rule,) = bucket["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    assert rule["ServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"  # what FileStore.put asks for
    assert bucket["PublicAccessBlockConfiguration"] == {
        "BlockPublicAcls": True,
        "BlockPublicPolicy": True,
        "IgnorePublicAcls": True,
        "RestrictPublicBuckets": True,
    }
    rules = {r.get("Id"): r for r in bucket["LifecycleConfiguration"]["Rules"]}
    assert rules["expire-build-files"]["Prefix"] == "builds/"
    # Files expire with the records that list them: the functions' RECORD_TTL_DAYS.
    ttl_days = synth.config.record_ttl_days
    assert rules["expire-build-files"]["ExpirationInDays"] == ttl_days
    for fn in synth.of_type("AWS::Lambda::Function").values():
        variables = fn["Properties"].get("Environment", {}).get("Variables", {})
        if "BUILDS_TABLE" in variables:
            assert variables["RECORD_TTL_DAYS"] == str(ttl_days)
    assert rules["abort-multipart"]["AbortIncompleteMultipartUpload"] == {"DaysAfterInitiation": 1}
    assert refs(bucket["LoggingConfiguration"]) == {ids(synth, synth.stack.storage.access_logs)}
    for bid in (bucket_id, ids(synth, synth.stack.storage.access_logs)):
        assert _denies_insecure_transport(synth, "AWS::S3::BucketPolicy", "Bucket", bid)


def _denies_insecure_transport(synth: Synthesized, policy_type: str, target_key: str, target_id: str) -> bool:
    for policy in synth.of_type(policy_type).values():
        props = policy["Properties"]
        if target_id not in refs(props[target_key]):
            continue
        for st in props["PolicyDocument"]["Statement"]:
            if st["Effect"] == "Deny" and st.get("Condition") == {"Bool": {"aws:SecureTransport": "false"}}:
                return True
    return False


# --- queues --------------------------------------------------------------------------------------
def test_queue_redrive_policies(synth: Synthesized) -> None:
    q = synth.stack.queues
    expected = {
        q.tasks: (q.tasks_dlq, 5),  # AWS suggests >= 5 for an SQS event source
        q.task_finished: (q.task_finished_dlq, 10),  # a failing record backs off (5-10 s first)
        q.webhooks: (q.webhooks_dlq, 8),  # WEBHOOK_MAX_ATTEMPTS default
    }
    for queue, (dlq, max_receives) in expected.items():
        props = synth.resources[ids(synth, queue)]["Properties"]
        assert props["RedrivePolicy"]["maxReceiveCount"] == max_receives
        assert refs(props["RedrivePolicy"]["deadLetterTargetArn"]) == {ids(synth, dlq)}
    for dlq in q.dead_letter_queues.values():
        props = synth.resources[ids(synth, dlq)]["Properties"]
        assert "RedrivePolicy" not in props
        assert props["MessageRetentionPeriod"] == 14 * 24 * 3600


def test_task_finished_is_fifo_with_explicit_dedup_and_fifo_dlq(synth: Synthesized) -> None:
    q = synth.stack.queues
    for queue in (q.task_finished, q.task_finished_dlq):
        props = synth.resources[ids(synth, queue)]["Properties"]
        assert props["FifoQueue"] is True
        assert props["ContentBasedDeduplication"] is False
        assert props["DeduplicationScope"] == "messageGroup"
        assert props["FifoThroughputLimit"] == "perMessageGroupId"
    for queue in (q.tasks, q.tasks_dlq, q.webhooks, q.webhooks_dlq, q.outbox_dlq):
        assert "FifoQueue" not in synth.resources[ids(synth, queue)]["Properties"]


def test_every_queue_is_encrypted_and_tls_only(synth: Synthesized) -> None:
    queues = synth.of_type("AWS::SQS::Queue")
    assert len(queues) == 8  # 7 + the WebSocket broadcaster's failure destination
    for qid, queue in queues.items():
        assert queue["Properties"].get("SqsManagedSseEnabled") is True or "KmsMasterKeyId" in queue["Properties"]
        assert _denies_insecure_transport(synth, "AWS::SQS::QueuePolicy", "Queues", qid), qid


def test_event_sources_report_partial_failures_and_visibility_covers_six_timeouts(synth: Synthesized) -> None:
    from shared.limits import WEBHOOK_BATCH_SIZE

    functions = {v: k for k, v in synth.logical_ids.items()}
    q = synth.stack.queues
    d = synth.config.deployment
    expected = {  # (function, queue) -> (batch size, maximum concurrency or None)
        ("task", ids(synth, q.tasks)): (1, d.task_max_concurrency),
        ("dispatch", ids(synth, q.task_finished)): (10, synth.config.dispatch_queue_concurrency),
        ("dispatch", ids(synth, q.tasks_dlq)): (10, 2),
        ("webhook", ids(synth, q.webhooks)): (WEBHOOK_BATCH_SIZE, d.webhook_max_concurrency),
    }
    seen = {}
    for mapping in synth.of_type("AWS::Lambda::EventSourceMapping").values():
        props = mapping["Properties"]
        if "StartingPosition" in props:
            continue  # the WebSocket broadcaster's stream (tests/infra/test_websocket_stack.py)
        fn = functions[props["FunctionName"]["Ref"]]
        (queue_id,) = refs(props["EventSourceArn"])
        seen[(fn, queue_id)] = (props["BatchSize"], props.get("ScalingConfig", {}).get("MaximumConcurrency"))
        assert props["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
        timeout = synth.resources[synth.logical_ids[fn]]["Properties"]["Timeout"]
        visibility = synth.resources[queue_id]["Properties"].get("VisibilityTimeout", 30)
        assert visibility >= 6 * timeout, (fn, queue_id)
    assert seen == expected


# --- workflow ------------------------------------------------------------------------------------
def test_state_machine_definition_is_the_asl_file(synth: Synthesized) -> None:
    from infra.constructs.workflow import ASL_PATH

    (sm,) = synth.of_type("AWS::StepFunctions::StateMachine").values()
    props = sm["Properties"]
    assert props["StateMachineType"] == "STANDARD"
    subs = props["DefinitionSubstitutions"]
    assert subs == {
        c.ASL_PLAN_FUNCTION: {"Fn::GetAtt": [synth.logical_ids["plan"], "Arn"]},
        c.ASL_DISPATCH_FUNCTION: {"Fn::GetAtt": [synth.logical_ids["dispatch"], "Arn"]},
    }

    def substituted(text: str) -> Any:
        return json.loads(re.sub(r"\$\{(\w+)\}", lambda m: f"<{m.group(1)}>", text))

    assert substituted(props["DefinitionString"]) == substituted(ASL_PATH.read_text())
    assert set(re.findall(r"\$\{(\w+)\}", ASL_PATH.read_text())) == set(subs)


def test_state_machine_logs_errors_traces_and_invokes_only_plan_and_dispatch(synth: Synthesized) -> None:
    (sm,) = synth.of_type("AWS::StepFunctions::StateMachine").values()
    props = sm["Properties"]
    # Production: errors only, and never the execution data (prompts, plans, generated code).
    assert props["LoggingConfiguration"]["Level"] == "ERROR"
    assert props["LoggingConfiguration"]["IncludeExecutionData"] is False
    assert props["TracingConfiguration"] == {"Enabled": True}
    role_id = props["RoleArn"]["Fn::GetAtt"][0]
    invoke = [s for s in statements_of(synth, role_id) if "lambda:InvokeFunction" in as_list(s["Action"])]
    assert len(invoke) == 1
    assert as_list(invoke[0]["Action"]) == ["lambda:InvokeFunction"]
    assert sorted(json.dumps(r) for r in as_list(invoke[0]["Resource"])) == sorted(
        json.dumps({"Fn::GetAtt": [synth.logical_ids[n], "Arn"]}) for n in ("plan", "dispatch")
    )


# --- functions -----------------------------------------------------------------------------------
WIRING = {
    "api": {
        c.BUILDS_TABLE,
        c.TASKS_TABLE,
        c.EVENTS_TABLE,
        c.IDEMPOTENCY_TABLE,
        c.FILES_BUCKET,
        c.TASK_FINISHED_QUEUE_URL,
        c.STATE_MACHINE_ARN,
    },
    "plan": {c.BUILDS_TABLE, c.TASKS_TABLE, c.EVENTS_TABLE, c.FILES_BUCKET},
    "dispatch": {c.BUILDS_TABLE, c.TASKS_TABLE, c.EVENTS_TABLE, c.TASKS_QUEUE_URL},
    "task": {
        c.BUILDS_TABLE,
        c.TASKS_TABLE,
        c.EVENTS_TABLE,
        c.CACHE_TABLE,
        c.FILES_BUCKET,
        c.TASKS_QUEUE_URL,
        c.TASK_FINISHED_QUEUE_URL,
    },
    "webhook": {c.BUILDS_TABLE, c.EVENTS_TABLE, c.WEBHOOK_QUEUE_URL, c.WEBHOOK_DLQ_URL, c.WEBHOOK_SECRET_ARN},
}


def _wiring_targets(synth: Synthesized) -> dict[str, str]:
    s = synth.stack
    return {
        c.BUILDS_TABLE: ids(synth, s.storage.builds),
        c.TASKS_TABLE: ids(synth, s.storage.tasks),
        c.EVENTS_TABLE: ids(synth, s.storage.events),
        c.CACHE_TABLE: ids(synth, s.storage.cache),
        c.IDEMPOTENCY_TABLE: ids(synth, s.storage.idempotency),
        c.FILES_BUCKET: ids(synth, s.storage.files),
        c.TASKS_QUEUE_URL: ids(synth, s.queues.tasks),
        c.TASK_FINISHED_QUEUE_URL: ids(synth, s.queues.task_finished),
        c.WEBHOOK_QUEUE_URL: ids(synth, s.queues.webhooks),
        c.WEBHOOK_DLQ_URL: ids(synth, s.queues.webhooks_dlq),
        c.STATE_MACHINE_ARN: ids(synth, s.workflow.state_machine),
        c.WEBHOOK_SECRET_ARN: ids(synth, s.secrets.webhook),
        c.PROVIDER_SECRET_ARN: ids(synth, s.secrets.providers),
    }


@pytest.mark.parametrize("name", sorted(c.FUNCTION_HANDLERS))
def test_function_environment(synth: Synthesized, name: str) -> None:
    from infra.config import APP_SETTING_VARS

    env = synth.resources[synth.logical_ids[name]]["Properties"]["Environment"]["Variables"]
    targets = _wiring_targets(synth)
    wiring = {k for k in env if k in targets}
    assert wiring == WIRING[name]
    for key in wiring:
        assert refs(env[key]) == {targets[key]}, key
    assert env[c.POWERTOOLS_SERVICE_NAME] == "stepwise"
    assert env[c.POWERTOOLS_METRICS_NAMESPACE] == c.METRICS_NAMESPACE
    assert env[c.AI_PROVIDER] == "bedrock"  # the committed stage's provider
    assert env[c.BEDROCK_MODEL_ID] == synth.config.settings.bedrock_model_id
    assert env[c.TASK_TIMEOUT_SECONDS] == "60"
    assert env[c.WEBHOOK_MAX_ATTEMPTS] == "8"
    if name == "api":
        # the configured frontend origin, then the dashboard's CloudFront origin
        cors_origins = env[c.STEPWISE_CORS_ORIGINS]
        assert cors_origins["Fn::Join"][1][0] == synth.stack.config.frontend_origin + ",https://"
        assert refs(cors_origins) == {synth.logical_id(synth.stack.dashboard.distribution)}
    extra = (
        set(env)
        - wiring
        - set(APP_SETTING_VARS)
        - {c.POWERTOOLS_SERVICE_NAME, c.POWERTOOLS_METRICS_NAMESPACE, c.STEPWISE_CORS_ORIGINS}
    )
    assert not extra
    secret_names = {c.ANTHROPIC_API_KEY, c.OPENAI_API_KEY, c.WEBHOOK_SECRET}
    assert not secret_names & set(env), "secrets come from Secrets Manager, never the environment"


@pytest.mark.parametrize("name", sorted(c.FUNCTION_HANDLERS))
def test_function_runtime_tracing_logging(synth: Synthesized, name: str) -> None:
    fn = synth.resources[synth.logical_ids[name]]["Properties"]
    assert fn["Handler"] == c.FUNCTION_HANDLERS[name]
    assert fn["Runtime"] == "python3.12"
    assert fn["Architectures"] == ["arm64"]
    assert fn["TracingConfig"] == {"Mode": "Active"}
    assert fn["LoggingConfig"]["LogFormat"] == "JSON"
    (log_group,) = refs(fn["LoggingConfig"]["LogGroup"])
    assert synth.resources[log_group]["Properties"]["RetentionInDays"] == synth.config.deployment.log_retention_days
    assert refs(fn["Layers"]) == {ids(synth, synth.stack.functions.layer)}
    role = synth.resources[role_of(synth, synth.logical_ids[name])]["Properties"]
    assert "ManagedPolicyArns" not in role


def test_function_timeouts(synth: Synthesized) -> None:
    timeouts = {n: synth.resources[i]["Properties"]["Timeout"] for n, i in synth.logical_ids.items()}
    assert timeouts["plan"] == 300
    assert timeouts["api"] <= 29  # API Gateway's integration limit
    assert timeouts["task"] > 60  # above TASK_TIMEOUT_SECONDS so the handler can record a timeout


# --- IAM -----------------------------------------------------------------------------------------
SCOPED_SERVICES = ("dynamodb:", "sqs:", "s3:", "states:", "secretsmanager:", "lambda:", "kms:")
SCOPED_ACTIONS = {"logs:CreateLogStream", "logs:PutLogEvents"}


def _our_policies(synth: Synthesized) -> dict[str, dict[str, Any]]:
    """IAM policies of this stack's functions (aws-cdk-lib's deploy-time copy function is checked in
    tests/infra/test_dashboard.py)."""
    return {k: v for k, v in synth.of_type("AWS::IAM::Policy").items() if not k.startswith("CustomCDKBucketDeployment")}


def test_no_wildcard_resource_for_data_actions(synth: Synthesized) -> None:
    for pid, policy in _our_policies(synth).items():
        for st in policy["Properties"]["PolicyDocument"]["Statement"]:
            actions = as_list(st["Action"])
            if not any(a.startswith(SCOPED_SERVICES) or a in SCOPED_ACTIONS for a in actions):
                continue
            for resource in as_list(st["Resource"]):
                assert resource != "*", (pid, actions)
                assert refs(resource), f"{pid}: {actions} on {resource} names no resource of this stack"
            assert not any(a.endswith("*") for a in actions), (pid, actions)
    for pid, policy in _our_policies(synth).items():
        for st in policy["Properties"]["PolicyDocument"]["Statement"]:
            if "*" in as_list(st["Resource"]):
                assert all(a.startswith(("xray:", "logs:")) for a in as_list(st["Action"])), (
                    pid,
                    st["Action"],
                )


def _granted(synth: Synthesized, name: str) -> dict[str, set[str]]:
    """action -> logical ids of the resources it is granted on, for one function's role."""
    out: dict[str, set[str]] = {}
    for st in statements_of(synth, role_of(synth, synth.logical_ids[name])):
        assert st["Effect"] == "Allow"
        for action in as_list(st["Action"]):
            out.setdefault(action, set()).update(refs(st["Resource"]))
    return out


def _put_patterns(synth: Synthesized, name: str) -> list[str]:
    out: list[str] = []
    for st in statements_of(synth, role_of(synth, synth.logical_ids[name])):
        if "s3:PutObject" in as_list(st["Action"]):
            out.extend(json.dumps(r) for r in as_list(st["Resource"]))
    return out


def test_least_privilege_per_function(synth: Synthesized) -> None:
    t = _wiring_targets(synth)
    granted = {n: _granted(synth, n) for n in c.FUNCTION_HANDLERS}
    sm = t[c.STATE_MACHINE_ARN]

    # Which services each function may touch at all.
    services = {n: {a.split(":")[0] for a in g} - {"logs", "xray"} for n, g in granted.items()}
    assert services == {
        "api": {"dynamodb", "s3", "sqs", "states"},
        "plan": {"dynamodb", "s3", "bedrock"},  # Bedrock: IAM, no provider secret
        "dispatch": {"dynamodb", "sqs", "states"},
        "task": {"dynamodb", "s3", "sqs", "bedrock"},
        "webhook": {"dynamodb", "sqs", "secretsmanager"},
    }
    api = granted["api"]
    assert api["states:StartExecution"] == {sm}
    assert api["states:StopExecution"] == {sm}
    assert api["states:SendTaskSuccess"] == api["states:SendTaskFailure"] == {sm}
    assert api["dynamodb:DeleteItem"] == {t[c.IDEMPOTENCY_TABLE], t[c.TASKS_TABLE]}
    assert api["s3:GetObject"] == api["s3:ListBucket"] == {t[c.FILES_BUCKET]}
    assert api["sqs:SendMessage"] == {t[c.TASK_FINISHED_QUEUE_URL]}
    assert "sqs:ReceiveMessage" not in api
    assert [p for p in _put_patterns(synth, "api")] and all(
        "/builds/*/input/*" in p for p in _put_patterns(synth, "api")
    )
    assert [p for p in _put_patterns(synth, "task")] and all(
        "/builds/*/files/*" in p for p in _put_patterns(synth, "task")
    )
    for name in ("plan", "dispatch", "task", "webhook"):
        assert "dynamodb:DeleteItem" not in granted[name]
        assert t[c.IDEMPOTENCY_TABLE] not in set().union(*granted[name].values())
    for name in ("plan", "dispatch", "webhook"):
        assert "s3:PutObject" not in granted[name]
    assert "s3:GetObject" not in granted["dispatch"] and "s3:GetObject" not in granted["webhook"]
    assert granted["task"]["sqs:SendMessage"] == {t[c.TASK_FINISHED_QUEUE_URL], t[c.TASKS_QUEUE_URL]}
    assert granted["task"]["sqs:ReceiveMessage"] == {t[c.TASKS_QUEUE_URL]}
    assert granted["task"]["sqs:ChangeMessageVisibility"] == {t[c.TASKS_QUEUE_URL]}
    assert granted["task"]["dynamodb:PutItem"] == {
        t[c.BUILDS_TABLE],
        t[c.TASKS_TABLE],
        t[c.EVENTS_TABLE],
        t[c.CACHE_TABLE],
    }
    assert granted["dispatch"]["sqs:SendMessage"] == {t[c.TASKS_QUEUE_URL]}
    assert granted["dispatch"]["sqs:ReceiveMessage"] == {
        t[c.TASK_FINISHED_QUEUE_URL],
        ids(synth, synth.stack.queues.tasks_dlq),
    }
    assert granted["dispatch"]["states:SendTaskSuccess"] == {sm}
    assert "states:StartExecution" not in granted["dispatch"]
    assert granted["webhook"]["sqs:ReceiveMessage"] == {t[c.WEBHOOK_QUEUE_URL]}
    assert granted["webhook"]["sqs:SendMessage"] == {t[c.WEBHOOK_DLQ_URL]}
    assert granted["webhook"]["secretsmanager:GetSecretValue"] == {t[c.WEBHOOK_SECRET_ARN]}
    assert set(granted["webhook"]) & {"dynamodb:PutItem", "dynamodb:BatchWriteItem"} == set()
    # Only the API reaches the byOwner index, by name.
    index_grants = [
        st
        for n in c.FUNCTION_HANDLERS
        for st in statements_of(synth, role_of(synth, synth.logical_ids[n]))
        if "/index/" in json.dumps(st["Resource"])
    ]
    assert len(index_grants) == 1 and "/index/byOwner" in json.dumps(index_grants[0]["Resource"])


# --- outbox --------------------------------------------------------------------------------------
def test_outbox_pipe_moves_inserts_to_the_webhook_queue(synth: Synthesized) -> None:
    (pipe,) = synth.of_type("AWS::Pipes::Pipe").values()
    props = pipe["Properties"]
    s = synth.stack
    assert props["Source"] == {"Fn::GetAtt": [ids(synth, s.storage.events), "StreamArn"]}
    assert refs(props["Target"]) == {ids(synth, s.queues.webhooks)}
    stream = props["SourceParameters"]["DynamoDBStreamParameters"]
    assert refs(stream["DeadLetterConfig"]) == {ids(synth, s.queues.outbox_dlq)}
    assert stream["StartingPosition"] == "TRIM_HORIZON"
    (flt,) = props["SourceParameters"]["FilterCriteria"]["Filters"]
    assert json.loads(flt["Pattern"]) == {  # only events of builds with a webhook travel the outbox
        "eventName": ["INSERT"],
        "dynamodb": {"NewImage": {"delivery": {"S": ["pending"]}}},
    }
    role_id = props["RoleArn"]["Fn::GetAtt"][0]
    actions = {a for st in statements_of(synth, role_id) for a in as_list(st["Action"])}
    assert actions == {
        "dynamodb:DescribeStream",
        "dynamodb:GetRecords",
        "dynamodb:GetShardIterator",
        "dynamodb:ListStreams",
        "sqs:SendMessage",
        "logs:CreateLogStream",
        "logs:PutLogEvents",
    }


# --- API -----------------------------------------------------------------------------------------
def _method_paths(synth: Synthesized) -> dict[tuple[str, str], dict[str, Any]]:
    resources = synth.of_type("AWS::ApiGateway::Resource")

    def path(resource_id: str | None) -> str:
        if resource_id is None or resource_id not in resources:
            return ""
        props = resources[resource_id]["Properties"]
        parent = props["ParentId"].get("Ref") if "Ref" in props["ParentId"] else None
        return path(parent) + "/" + props["PathPart"]

    out = {}
    for method in synth.of_type("AWS::ApiGateway::Method").values():
        props = method["Properties"]
        resource = props["ResourceId"].get("Ref")
        out[(path(resource) or "/", props["HttpMethod"])] = props
    return out


CONTRACT_ROUTES = {
    ("/builds", "POST"),
    ("/builds", "GET"),
    ("/builds/{buildId}", "GET"),
    ("/builds/{buildId}/events", "GET"),
    ("/builds/{buildId}/approval", "POST"),
    ("/builds/{buildId}/cancel", "POST"),
    ("/builds/{buildId}/tasks/{taskId}/retry", "POST"),
    ("/builds/{buildId}/tasks/{taskId}/skip", "POST"),
    ("/builds/{buildId}/files", "GET"),
    ("/builds/{buildId}/files/{path+}", "GET"),
    ("/openapi.json", "GET"),
    ("/docs", "GET"),
}


def test_every_route_is_authorized_except_openapi_and_preflight(synth: Synthesized) -> None:
    methods = _method_paths(synth)
    assert {k for k in methods if k[1] not in ("OPTIONS", "ANY")} == CONTRACT_ROUTES
    (authorizer_id,) = synth.of_type("AWS::ApiGateway::Authorizer")
    authorizer = synth.resources[authorizer_id]["Properties"]
    assert authorizer["Type"] == "COGNITO_USER_POOLS"
    assert refs(authorizer["ProviderARNs"]) == {ids(synth, synth.stack.api.user_pool)}
    for (path, verb), props in methods.items():
        if verb in ("OPTIONS", "ANY") or (path, verb) in {("/openapi.json", "GET"), ("/docs", "GET")}:
            assert props["AuthorizationType"] == "NONE"
            continue
        assert props["AuthorizationType"] == "COGNITO_USER_POOLS", (path, verb)
        assert props["AuthorizerId"] == {"Ref": authorizer_id}
        assert "RequestValidatorId" in props
        assert refs(props["Integration"]["Uri"]) == {synth.logical_ids["api"]}
    assert "RequestModels" in methods[("/builds", "POST")]


ECHO_ORIGIN = "method.request.header.Origin"


def test_api_stage_throttling_logging_cors(synth: Synthesized) -> None:
    (stage,) = synth.of_type("AWS::ApiGateway::Stage").values()
    props = stage["Properties"]
    assert refs(props["AccessLogSetting"]["DestinationArn"]) == {ids(synth, synth.stack.api.access_logs)}
    assert props["TracingEnabled"] is True
    (settings,) = props["MethodSettings"]
    assert settings["ThrottlingRateLimit"] == 50 and settings["ThrottlingBurstLimit"] == 100
    origin = f"'{synth.config.frontend_origin}'"
    preflight = _method_paths(synth)[("/builds", "OPTIONS")]
    headers = preflight["Integration"]["IntegrationResponses"][0]["ResponseParameters"]
    assert headers["method.response.header.Access-Control-Allow-Origin"] == origin
    assert "Authorization" in headers["method.response.header.Access-Control-Allow-Headers"]
    responses = {
        r["Properties"]["ResponseType"]: r["Properties"]
        for r in synth.of_type("AWS::ApiGateway::GatewayResponse").values()
    }
    assert responses["UNAUTHORIZED"]["StatusCode"] == "401"
    assert responses["THROTTLED"]["StatusCode"] == "429"
    # Two allowed origins (the frontend's and the dashboard's CloudFront origin): a gateway-made
    # answer cannot choose among them, so it echoes the request's Origin (these answers hold no data).
    for response in responses.values():
        assert response["ResponseParameters"]["gatewayresponse.header.Access-Control-Allow-Origin"] == ECHO_ORIGIN
        assert response["ResponseTemplates"]["application/json"].startswith('{"error": {"code": ')


def test_undeclared_method_is_a_405_mock_with_allow(synth: Synthesized) -> None:
    """Every resource with routes has an `ANY` gateway mock answering 405 with the path's methods in
    `Allow` (and the CORS origin), so an undeclared method never reaches the function."""
    methods = _method_paths(synth)
    paths = {path for path, verb in methods if verb not in ("OPTIONS", "ANY")}
    assert {path for path, verb in methods if verb == "ANY"} == paths
    for path in paths:
        props = methods[(path, "ANY")]
        integration = props["Integration"]
        assert integration["Type"] == "MOCK"
        (answer,) = integration["IntegrationResponses"]
        assert answer["StatusCode"] == "405"
        declared = {verb for p, verb in methods if p == path and verb != "ANY"}
        allow = answer["ResponseParameters"]["method.response.header.Allow"].strip("'")
        assert set(allow.split(", ")) == declared | {"OPTIONS"}, path
        assert answer["ResponseParameters"]["method.response.header.Access-Control-Allow-Origin"] == ECHO_ORIGIN
        assert json.loads(answer["ResponseTemplates"]["application/json"])["error"]["code"] == "method_not_allowed"


def test_gateway_routes_are_the_openapi_operations() -> None:
    """The routes the gateway declares are exactly the operations the function documents."""
    from functions.api.handler import ROUTES

    declared = {(p.replace("{path+}", "{path}"), v) for p, v in CONTRACT_ROUTES}
    assert declared == {(p, m) for m, p in ROUTES}


# --- secrets and monitoring ----------------------------------------------------------------------
def test_secrets(synth: Synthesized) -> None:
    webhook = synth.resources[ids(synth, synth.stack.secrets.webhook)]["Properties"]
    assert webhook["GenerateSecretString"]["ExcludePunctuation"] is True
    assert webhook["GenerateSecretString"]["PasswordLength"] % 4 == 0  # valid base64 length
    providers = synth.resources[ids(synth, synth.stack.secrets.providers)]["Properties"]
    generated = providers["GenerateSecretString"]
    assert json.loads(generated["SecretStringTemplate"]) == {c.ANTHROPIC_API_KEY: "", c.OPENAI_API_KEY: ""}
    # No secret value in the template: a literal SecretString would overwrite the operator's keys
    # on the next deploy that changes it.
    for secret in synth.of_type("AWS::SecretsManager::Secret").values():
        assert "SecretString" not in secret["Properties"]
        assert (secret["DeletionPolicy"], secret["UpdateReplacePolicy"]) == ("Retain", "Retain")


def test_alarms(synth: Synthesized) -> None:
    alarms = list(synth.of_type("AWS::CloudWatch::Alarm").values())
    topic_id = ids(synth, synth.stack.monitoring.topic)
    for alarm in alarms:
        assert refs(alarm["Properties"]["AlarmActions"]) == {topic_id}

    def by_metric(name: str) -> list[dict[str, Any]]:
        return [a["Properties"] for a in alarms if a["Properties"].get("MetricName") == name]

    dlq_alarms = by_metric("ApproximateNumberOfMessagesVisible")
    assert {next(iter(refs(a["Dimensions"]))) for a in dlq_alarms} == {
        ids(synth, q) for q in [*synth.stack.queues.dead_letter_queues.values(), synth.stack.websocket.broadcast_dlq]
    }
    assert all(a["Threshold"] == 0 and a["ComparisonOperator"] == "GreaterThanThreshold" for a in dlq_alarms)
    (blocked,) = by_metric("plan.hard_blocked")
    assert (blocked["Namespace"], blocked["Threshold"], blocked["Period"], blocked["Statistic"]) == (
        c.METRICS_NAMESPACE,
        3,
        600,
        "Sum",
    )
    assert blocked["ComparisonOperator"] == "GreaterThanThreshold"
    (cost,) = by_metric("build.cost_usd")
    assert (cost["Threshold"], cost["Period"]) == (synth.config.deployment.cost_alarm_usd_per_hour, 3600)
    (failed,) = by_metric("ExecutionsFailed")
    assert refs(failed["Dimensions"]) == {ids(synth, synth.stack.workflow.state_machine)}
    rates = [a for a in alarms if "error rate" in a["Properties"]["AlarmDescription"]]
    rate_functions = {fid for a in rates for fid in refs(a["Properties"]["Metrics"])}
    websocket = {ids(synth, fn) for fn in synth.stack.websocket.functions.values()}
    assert rate_functions == set(synth.logical_ids.values()) | websocket
    (topic,) = synth.of_type("AWS::SNS::Topic").values()
    assert "KmsMasterKeyId" in topic["Properties"]
    (subscription,) = synth.of_type("AWS::SNS::Subscription").values()
    assert subscription["Properties"]["Endpoint"] == synth.config.alarm_email
    assert subscription["Properties"]["Protocol"] == "email"
    assert refs(subscription["Properties"]["TopicArn"]) == {topic_id}
    assert len(synth.of_type("AWS::CloudWatch::Dashboard")) == 1


def test_outputs(synth: Synthesized) -> None:
    outputs = synth.template["Outputs"]
    for name in (
        "ApiUrl",
        "UserPoolId",
        "UserPoolClientId",
        "FilesBucketName",
        "StateMachineArn",
        "WebhookSecretArn",
        "ProviderSecretArn",
        "WebhookDlqUrl",
        "AlarmTopicArn",
        "DashboardName",
    ):
        assert name in outputs and outputs[name]["Description"]


def test_dev_stack_is_environment_agnostic(dev_synth: Synthesized) -> None:
    text = json.dumps(dev_synth.template)
    assert not re.search(r"\b\d{12}\b", text), "no account id baked into the template"
    assert not re.search(r"\b(us|eu|ap|sa|ca|me|af)-[a-z]+-\d\b", text), "no region baked into the template"


def test_state_machine_retries_lambda_errors_and_waits_out_plan_throttles(synth: Synthesized) -> None:
    """Execute and AwaitApproval are retried on Lambda service errors and interrupted steps (one
    throttle must not fail a build); Plan, whose reserved concurrency caps plans in flight, waits a
    throttle out for minutes instead of failing the build."""
    (sm,) = synth.of_type("AWS::StepFunctions::StateMachine").values()
    text = sm["Properties"]["DefinitionString"]
    states = json.loads(re.sub(r"\$\{(\w+)\}", "x", text if isinstance(text, str) else json.dumps(text)))["States"]
    for name in ("Execute", "AwaitApproval"):
        errors = {e for r in states[name]["Retry"] for e in r["ErrorEquals"]}
        assert {"Lambda.ServiceException", "Lambda.TooManyRequestsException", "StepInterrupted"} <= errors, name
    throttle = states["Plan"]["Retry"][0]
    assert throttle["ErrorEquals"] == ["Lambda.TooManyRequestsException"]
    waited = sum(throttle["IntervalSeconds"] * throttle["BackoffRate"] ** i for i in range(throttle["MaxAttempts"] - 1))
    assert waited >= 300
