"""Template assertions for live events over WebSocket: the API and its routes, the `$connect`
authorizer, the connections table, the broadcaster on the events stream, least-privilege grants,
the alarm and the URL output."""

from __future__ import annotations

import json
from typing import Any

import pytest

from shared import constants as c
from tests.infra.conftest import Synthesized
from tests.infra.test_stack import as_list, ids, refs, role_of, statements_of

pytestmark = pytest.mark.infra
pytest.importorskip("aws_cdk", reason="infra tests need the [infra] extra (aws-cdk-lib, cdk-nag)")


def _fn(synth: Synthesized, name: str) -> str:
    return ids(synth, synth.stack.websocket.functions[name])


def _one(synth: Synthesized, cfn_type: str) -> dict[str, Any]:
    (found,) = synth.of_type(cfn_type).values()
    return found["Properties"]


def test_a_websocket_api_with_connect_default_and_disconnect_routes(synth: Synthesized) -> None:
    api = _one(synth, "AWS::ApiGatewayV2::Api")
    assert api["ProtocolType"] == "WEBSOCKET"
    routes = {r["Properties"]["RouteKey"]: r["Properties"] for r in synth.of_type("AWS::ApiGatewayV2::Route").values()}
    assert set(routes) == {"$connect", "$default", "$disconnect"}
    integrations = synth.of_type("AWS::ApiGatewayV2::Integration")
    for route in routes.values():
        (integration_id,) = refs(route["Target"])
        assert refs(integrations[integration_id]["Properties"]["IntegrationUri"]) == {_fn(synth, "ws_connection")}
    connect = routes["$connect"]
    assert connect["AuthorizationType"] == "CUSTOM"
    authorizer = _one(synth, "AWS::ApiGatewayV2::Authorizer")
    assert refs(connect["AuthorizerId"]) == set(synth.of_type("AWS::ApiGatewayV2::Authorizer"))
    assert authorizer["AuthorizerType"] == "REQUEST"
    assert authorizer["IdentitySource"] == ["route.request.querystring.token"]
    assert refs(authorizer["AuthorizerUri"]) == {_fn(synth, "ws_authorizer")}


def test_stage_is_throttled_and_access_logged(synth: Synthesized) -> None:
    stage = _one(synth, "AWS::ApiGatewayV2::Stage")
    assert stage["StageName"] == "v1" and stage["AutoDeploy"] is True
    assert stage["DefaultRouteSettings"]["ThrottlingRateLimit"] > 0
    assert refs(stage["AccessLogSettings"]["DestinationArn"]) == {ids(synth, synth.stack.websocket.access_logs)}
    assert "$context.connectionId" in stage["AccessLogSettings"]["Format"]


def test_the_authorizer_checks_tokens_of_this_pool_and_client(synth: Synthesized) -> None:
    env = synth.resources[_fn(synth, "ws_authorizer")]["Properties"]["Environment"]["Variables"]
    assert refs(env[c.COGNITO_ISSUER]) == {ids(synth, synth.stack.api.user_pool)}
    region = synth.config.deployment.region  # the committed stage pins it; else the pseudo parameter
    assert json.dumps(env[c.COGNITO_ISSUER]).startswith(
        f'{{"Fn::Join": ["", ["https://cognito-idp.{region}.", {{"Ref": "AWS::URLSuffix"}}'
        if region
        else '{"Fn::Join": ["", ["https://cognito-idp.", {"Ref": "AWS::Region"}'
    )
    assert refs(env[c.COGNITO_CLIENT_ID]) == {ids(synth, synth.stack.api.client)}
    # it reads nothing and writes nothing: logs and traces only
    role = role_of(synth, _fn(synth, "ws_authorizer"))
    actions = {a for st in statements_of(synth, role) for a in as_list(st["Action"])}
    assert actions <= {"logs:CreateLogStream", "logs:PutLogEvents", "xray:PutTraceSegments", "xray:PutTelemetryRecords"}


def test_connections_table_keys_ttl_and_index(synth: Synthesized) -> None:
    table = synth.resources[ids(synth, synth.stack.websocket.connections)]["Properties"]
    assert [(k["AttributeName"], k["KeyType"]) for k in table["KeySchema"]] == [("pk", "HASH"), ("sk", "RANGE")]
    assert table["TimeToLiveSpecification"] == {"AttributeName": "expiresAt", "Enabled": True}
    (index,) = table["GlobalSecondaryIndexes"]
    assert index["IndexName"] == "byConnection" and index["Projection"] == {"ProjectionType": "KEYS_ONLY"}
    assert table["SSESpecification"] == {"SSEEnabled": True}
    assert table["BillingMode"] == "PAY_PER_REQUEST"


def test_the_broadcaster_reads_the_events_stream_next_to_the_outbox_pipe(synth: Synthesized) -> None:
    events_id = ids(synth, synth.stack.storage.events)
    mappings = [
        m["Properties"]
        for m in synth.of_type("AWS::Lambda::EventSourceMapping").values()
        if "StartingPosition" in m["Properties"]
    ]
    (mapping,) = mappings
    assert mapping["EventSourceArn"] == {"Fn::GetAtt": [events_id, "StreamArn"]}
    assert mapping["FunctionName"] == {"Ref": _fn(synth, "ws_broadcast")}
    assert json.loads(mapping["FilterCriteria"]["Filters"][0]["Pattern"]) == {"eventName": ["INSERT"]}
    assert mapping["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert mapping["BisectBatchOnFunctionError"] is True
    assert refs(mapping["DestinationConfig"]["OnFailure"]["Destination"]) == {
        ids(synth, synth.stack.websocket.broadcast_dlq)
    }
    # the pipe to the webhook queue still reads the same stream: one outbox, two readers
    (pipe,) = synth.of_type("AWS::Pipes::Pipe").values()
    assert pipe["Properties"]["Source"] == {"Fn::GetAtt": [events_id, "StreamArn"]}


def test_only_the_connection_and_broadcast_functions_may_post_to_connections(synth: Synthesized) -> None:
    api_id = ids(synth, synth.stack.websocket.api)
    allowed = {role_of(synth, _fn(synth, n)) for n in ("ws_connection", "ws_broadcast")}
    holders = set()
    for policy in synth.of_type("AWS::IAM::Policy").values():
        for st in policy["Properties"]["PolicyDocument"]["Statement"]:
            if "execute-api:ManageConnections" in as_list(st["Action"]):
                assert as_list(st["Action"]) == ["execute-api:ManageConnections"]
                (resource,) = as_list(st["Resource"])
                assert refs(resource) == {api_id}
                assert json.dumps(resource).endswith('/v1/POST/@connections/*"]]}')
                holders |= {r["Ref"] for r in policy["Properties"]["Roles"]}
    assert holders == allowed


def test_websocket_functions_touch_only_their_tables(synth: Synthesized) -> None:
    ws = synth.stack.websocket
    allowed = {
        ids(synth, ws.connections),
        ids(synth, synth.stack.storage.events),
        ids(synth, synth.stack.storage.builds),
        ids(synth, ws.broadcast_dlq),
        ids(synth, ws.api),
    }
    for name in ("ws_connection", "ws_broadcast"):
        role = role_of(synth, _fn(synth, name))
        for st in statements_of(synth, role):
            actions = as_list(st["Action"])
            if any(a.startswith(("dynamodb:", "sqs:", "execute-api:")) for a in actions):
                for resource in as_list(st["Resource"]):
                    assert resource != "*"
                    assert refs(resource) <= allowed, (name, actions, resource)
    env = synth.resources[_fn(synth, "ws_broadcast")]["Properties"]["Environment"]["Variables"]
    assert refs(env[c.CONNECTIONS_TABLE]) == {ids(synth, ws.connections)}
    assert refs(env[c.WEBSOCKET_CALLBACK_URL]) == {ids(synth, ws.api)}


def test_broadcaster_failures_alarm_and_the_url_is_an_output(synth: Synthesized) -> None:
    alarm = synth.resources[ids(synth, synth.stack.websocket.broadcaster_errors)]["Properties"]
    assert refs(alarm["AlarmActions"]) == {ids(synth, synth.stack.monitoring.topic)}
    metrics = {m["Id"]: m for m in alarm["Metrics"]}
    assert refs(metrics["errors"]["MetricStat"]["Metric"]["Dimensions"]) == {_fn(synth, "ws_broadcast")}
    assert metrics["pushes"]["MetricStat"]["Metric"]["MetricName"] == "live.broadcast_failed"
    assert alarm["Threshold"] == 1 and alarm["ComparisonOperator"] == "GreaterThanOrEqualToThreshold"
    url = synth.template["Outputs"]["WebSocketUrl"]["Value"]
    assert refs(url) == {ids(synth, synth.stack.websocket.api)}
    assert json.dumps(url).startswith('{"Fn::Join": ["", ["wss://"')
