"""The outbox: an EventBridge Pipe from the events table's stream to the webhook queue.

A function records an event with one DynamoDB write; the stream carries every INSERT to the webhook
queue, so an event that is recorded is always queued for delivery, even if the writer dies right
after. Each SQS message body is one DynamoDB stream record as Pipes sends it:
`{"eventID", "eventName": "INSERT", "dynamodb": {"Keys", "NewImage", ...}, "eventSourceARN", ...}`
with the event in `dynamodb.NewImage` (DynamoDB JSON).
"""

from __future__ import annotations

import json

from aws_cdk import RemovalPolicy, Stack
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_iam as iam
from aws_cdk import aws_logs as logs
from aws_cdk import aws_pipes as pipes
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from shared.dal.events import OUTBOX_FILTER

# Records the pipe retries before parking them on the outbox DLQ (the stream keeps them 24 h).
MAX_RETRY_ATTEMPTS = 185


class Outbox(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        events_table: dynamodb.ITable,
        webhook_queue: sqs.IQueue,
        dead_letter_queue: sqs.IQueue,
        log_retention: logs.RetentionDays,
    ) -> None:
        super().__init__(scope, construct_id)
        stream_arn = events_table.table_stream_arn
        if stream_arn is None:
            raise ValueError("the events table needs a stream (NEW_IMAGE) to act as the outbox")

        self.log_group = logs.LogGroup(
            self,
            "Logs",
            log_group_name=f"/aws/vendedlogs/pipes/{Stack.of(self).stack_name}-outbox",
            retention=log_retention,
            # Named (for the vendedlogs prefix), so it must go with the stack or a re-deploy collides.
            removal_policy=RemovalPolicy.DESTROY,
        )
        self.role = iam.Role(
            self,
            "Role",
            assumed_by=iam.ServicePrincipal("pipes.amazonaws.com"),
            description="Stepwise outbox pipe: events stream -> webhook queue",
        )
        self.role.add_to_policy(
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
        self.role.add_to_policy(
            iam.PolicyStatement(
                actions=["sqs:SendMessage"],
                resources=[webhook_queue.queue_arn, dead_letter_queue.queue_arn],
            )
        )
        self.role.add_to_policy(
            iam.PolicyStatement(
                actions=["logs:CreateLogStream", "logs:PutLogEvents"],
                resources=[self.log_group.log_group_arn],
            )
        )

        self.pipe = pipes.CfnPipe(
            self,
            "Pipe",
            description="Stepwise outbox: every recorded event is queued for webhook delivery",
            role_arn=self.role.role_arn,
            source=stream_arn,
            source_parameters=pipes.CfnPipe.PipeSourceParametersProperty(
                dynamo_db_stream_parameters=pipes.CfnPipe.PipeSourceDynamoDBStreamParametersProperty(
                    starting_position="TRIM_HORIZON",
                    batch_size=10,  # the SQS target's SendMessageBatch maximum
                    maximum_retry_attempts=MAX_RETRY_ATTEMPTS,
                    on_partial_batch_item_failure="AUTOMATIC_BISECT",
                    dead_letter_config=pipes.CfnPipe.DeadLetterConfigProperty(arn=dead_letter_queue.queue_arn),
                ),
                filter_criteria=pipes.CfnPipe.FilterCriteriaProperty(
                    filters=[
                        pipes.CfnPipe.FilterProperty(pattern=json.dumps(OUTBOX_FILTER)),
                    ]
                ),
            ),
            target=webhook_queue.queue_arn,
            log_configuration=pipes.CfnPipe.PipeLogConfigurationProperty(
                cloudwatch_logs_log_destination=pipes.CfnPipe.CloudwatchLogsLogDestinationProperty(
                    log_group_arn=self.log_group.log_group_arn,
                ),
                level="ERROR",
            ),
        )
        # The role's policy must exist before the pipe starts polling.
        self.pipe.node.add_dependency(self.role)
