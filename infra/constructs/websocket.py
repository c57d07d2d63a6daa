"""Live events over WebSocket: an API Gateway WebSocket API whose `$connect` checks the Cognito JWT
in `?token=`, a connections table, and a broadcaster fed by the events table's stream.

- The stream stays the one outbox: the broadcaster is a second reader of the same stream (an event
  source mapping filtered to INSERTs), next to the EventBridge Pipe that feeds webhooks. Nothing
  writes an event twice.
- `$connect` runs a REQUEST authorizer (identity source `route.request.querystring.token`; API
  Gateway answers 401 itself when the token is missing or refused), then the connection function,
  which records the caller. `$default` takes subscribe / unsubscribe / ping; `$disconnect` forgets.
- Least privilege: only the connection and broadcaster functions may PostToConnection, and only on
  this API's stage; the authorizer touches no AWS resource at all.
"""

from __future__ import annotations

import json

from aws_cdk import Duration, Stack
from aws_cdk import aws_apigatewayv2 as apigwv2
from aws_cdk import aws_apigatewayv2_authorizers as authorizers
from aws_cdk import aws_apigatewayv2_integrations as integrations
from aws_cdk import aws_cloudwatch as cw
from aws_cdk import aws_cognito as cognito
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_lambda_event_sources as sources
from aws_cdk import aws_logs as logs
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from infra.constructs.functions import DDB_READ, Functions, FunctionSpec
from infra.constructs.storage import table
from infra.nag import acknowledge, arn_prefix
from shared import constants as c
from shared.logic.live_delivery import BROADCAST_FAILED_METRIC
from shared.resources import BY_CONNECTION_INDEX, CONNECTIONS

STAGE = "v1"
BROADCAST_BATCH = 100
BROADCAST_RETRIES = 10
ACCESS_LOG_FIELDS = {
    "requestId": "$context.requestId",
    "ip": "$context.identity.sourceIp",
    "requestTime": "$context.requestTimeEpoch",
    "routeKey": "$context.routeKey",
    "eventType": "$context.eventType",
    "connectionId": "$context.connectionId",
    "status": "$context.status",
    "sub": "$context.authorizer.principalId",
    "integrationLatencyMs": "$context.integrationLatency",
    "error": "$context.error.message",
    "authorizerError": "$context.authorizer.error",
}

SPECS = {
    "ws_authorizer": FunctionSpec(256, Duration.seconds(10), "WebSocket $connect: checks the Cognito JWT"),
    "ws_connection": FunctionSpec(256, Duration.seconds(29), "WebSocket routes: connect, subscribe and replay, ping"),
    "ws_broadcast": FunctionSpec(256, Duration.seconds(60), "Pushes recorded events to subscribed WebSockets"),
}


class WebSocket(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        functions: Functions,
        builds_table: dynamodb.ITable,
        events_table: dynamodb.ITable,
        user_pool: cognito.IUserPool,
        user_pool_client: cognito.IUserPoolClient,
        log_retention: logs.RetentionDays,
        rate_limit: float,
        burst_limit: int,
        service_name: str,
    ) -> None:
        super().__init__(scope, construct_id)
        stream_arn = events_table.table_stream_arn
        if stream_arn is None:
            raise ValueError("the events table needs a stream (NEW_IMAGE): the broadcaster reads it")

        # Subscriptions (buildId, connectionId) and connections; every item expires (TTL) after the
        # 2 hours API Gateway keeps a connection. Ephemeral data: it goes with the stack.
        self.connections = table(self, CONNECTIONS)

        self.api = apigwv2.WebSocketApi(
            self,
            "Api",
            api_name=f"{Stack.of(self).stack_name}-live",
            description="Stepwise live events (subscribe to a build's events)",
            route_selection_expression="$request.body.action",
        )
        self.stage = apigwv2.WebSocketStage(
            self,
            "Stage",
            web_socket_api=self.api,
            stage_name=STAGE,
            auto_deploy=True,
            throttle=apigwv2.ThrottleSettings(rate_limit=rate_limit, burst_limit=burst_limit),
        )
        self.access_logs = logs.LogGroup(self, "AccessLogs", retention=log_retention)
        stage = self.stage.node.default_child
        assert isinstance(stage, apigwv2.CfnStage)
        stage.access_log_settings = apigwv2.CfnStage.AccessLogSettingsProperty(
            destination_arn=self.access_logs.log_group_arn, format=json.dumps(ACCESS_LOG_FIELDS)
        )
        callback_url = self.stage.callback_url  # https://{api}.execute-api.{region}.{suffix}/v1

        t = events_table
        stack = Stack.of(self)
        self.functions: dict[str, lambda_.Function] = {
            "ws_authorizer": functions.add_function(
                "ws_authorizer",
                SPECS["ws_authorizer"],
                {
                    # The `iss` of the pool's tokens (and where its JWKS is served).
                    c.COGNITO_ISSUER: f"https://cognito-idp.{stack.region}.{stack.url_suffix}/{user_pool.user_pool_id}",
                    c.COGNITO_CLIENT_ID: user_pool_client.user_pool_client_id,
                },
                handler=c.WEBSOCKET_FUNCTION_HANDLERS["ws_authorizer"],
            ),
            **{
                name: functions.add_function(
                    name,
                    SPECS[name],
                    {
                        c.BUILDS_TABLE: builds_table.table_name,
                        c.EVENTS_TABLE: t.table_name,
                        c.CONNECTIONS_TABLE: self.connections.table_name,
                        c.WEBSOCKET_CALLBACK_URL: callback_url,
                    },
                    handler=c.WEBSOCKET_FUNCTION_HANDLERS[name],
                )
                for name in ("ws_connection", "ws_broadcast")
            },
        }
        authorizer_fn, connection, broadcast = (
            self.functions[n] for n in ("ws_authorizer", "ws_connection", "ws_broadcast")
        )

        # --- data ---------------------------------------------------------------------------------
        for fn in (connection, broadcast):
            iam.Grant.add_to_principal(
                grantee=fn,
                actions=[
                    "dynamodb:GetItem",
                    "dynamodb:PutItem",
                    "dynamodb:UpdateItem",
                    "dynamodb:DeleteItem",
                    "dynamodb:BatchWriteItem",
                    "dynamodb:Query",
                ],
                resource_arns=[
                    self.connections.table_arn,
                    f"{self.connections.table_arn}/index/{BY_CONNECTION_INDEX}",
                ],
            )
            iam.Grant.add_to_principal(grantee=fn, actions=list(DDB_READ), resource_arns=[t.table_arn])
        iam.Grant.add_to_principal(
            grantee=connection, actions=["dynamodb:GetItem"], resource_arns=[builds_table.table_arn]
        )
        # PostToConnection on this API's stage only (execute-api:ManageConnections).
        manage = iam.PolicyStatement(
            actions=["execute-api:ManageConnections"],
            resources=[
                Stack.of(self).format_arn(
                    service="execute-api",
                    resource=self.api.api_id,
                    resource_name=f"{STAGE}/POST/@connections/*",
                )
            ],
        )
        for fn in (connection, broadcast):
            fn.add_to_role_policy(manage)
            acknowledge(
                fn.role or fn,
                f"AwsSolutions-IAM5[Resource::{arn_prefix(self, 'execute-api')}:"
                f"<{_logical(self.api)}>/{STAGE}/POST/@connections/*]",
                "PostToConnection is limited to this WebSocket API's stage; connection ids are "
                "assigned by API Gateway at run time, so the last path segment is a wildcard.",
            )

        # --- routes -------------------------------------------------------------------------------
        self.api.add_route(
            "$connect",
            integration=integrations.WebSocketLambdaIntegration("ConnectIntegration", connection),
            authorizer=authorizers.WebSocketLambdaAuthorizer(
                "Authorizer", authorizer_fn, identity_source=["route.request.querystring.token"]
            ),
        )
        for route in ("$default", "$disconnect"):
            created = self.api.add_route(
                route,
                integration=integrations.WebSocketLambdaIntegration(
                    f"{route.strip('$').title()}Integration", connection
                ),
            )
            acknowledge(
                created,
                "AwsSolutions-APIG4",
                "A WebSocket API authorizes once, on $connect (Cognito JWT checked by the Lambda "
                "authorizer); later frames of that connection carry the authorized principal.",
            )

        # --- the broadcaster: a second reader of the events stream --------------------------------
        self.broadcast_dlq = sqs.Queue(
            self,
            "BroadcastDlq",
            encryption=sqs.QueueEncryption.SQS_MANAGED,
            enforce_ssl=True,
            retention_period=Duration.days(14),
        )
        acknowledge(
            self.broadcast_dlq,
            "AwsSolutions-SQS3",
            "This queue is itself the failure destination of the broadcaster's stream event "
            "source (batches it gave up on), not a work queue that would need its own DLQ.",
        )
        # Stream reads scoped to this stream (CDK's DynamoEventSource would grant ListStreams on *).
        broadcast.add_to_role_policy(
            iam.PolicyStatement(
                actions=[
                    "dynamodb:DescribeStream",
                    "dynamodb:GetRecords",
                    "dynamodb:GetShardIterator",
                    "dynamodb:ListStreams",
                ],
                resources=[stream_arn],
            )
        )
        self.broadcast_dlq.grant_send_messages(broadcast)
        self.stream_mapping = lambda_.EventSourceMapping(
            self,
            "BroadcastStream",
            target=broadcast,
            event_source_arn=stream_arn,
            starting_position=lambda_.StartingPosition.LATEST,
            batch_size=BROADCAST_BATCH,
            max_batching_window=Duration.millis(0),
            bisect_batch_on_error=True,
            retry_attempts=BROADCAST_RETRIES,
            report_batch_item_failures=True,
            max_record_age=Duration.hours(1),  # a live page wants now; older gaps are replayed on subscribe
            on_failure=sources.SqsDlq(self.broadcast_dlq),
            filters=[lambda_.FilterCriteria.filter({"eventName": lambda_.FilterRule.is_equal("INSERT")})],
        )

        # Errors: the function failing, or a push it reported back for retry (a partial batch failure
        # is not a Lambda error, so the function counts those itself).
        failures = cw.MathExpression(
            expression="FILL(errors, 0) + FILL(pushes, 0)",
            using_metrics={
                "errors": broadcast.metric_errors(period=Duration.minutes(5), statistic="Sum"),
                "pushes": cw.Metric(
                    namespace=c.METRICS_NAMESPACE,
                    metric_name=BROADCAST_FAILED_METRIC,
                    dimensions_map={"service": service_name},
                    statistic="Sum",
                    period=Duration.minutes(5),
                ),
            },
            label="broadcaster failures",
            period=Duration.minutes(5),
        )
        self.broadcaster_errors = cw.Alarm(
            self,
            "BroadcasterErrors",
            alarm_description="The WebSocket broadcaster failed (live pages may lag until its retry succeeds)",
            metric=failures,
            threshold=1,
            comparison_operator=cw.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
            evaluation_periods=1,
            treat_missing_data=cw.TreatMissingData.NOT_BREACHING,
        )

    @property
    def url(self) -> str:
        """wss://{api}.execute-api.{region}.amazonaws.com/v1"""
        return self.stage.url


def _logical(construct: Construct) -> str:
    child = construct.node.default_child
    assert child is not None
    return str(Stack.of(construct).resolve(child.logical_id))  # type: ignore[attr-defined]
