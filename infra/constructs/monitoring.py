"""Alarms, their SNS topic, and one dashboard.

Application metrics are Powertools EMF metrics in namespace `shared.constants.METRICS_NAMESPACE`
with the default `service` dimension (every function uses the same service name), so each alarm
names exactly one metric stream.

The topic is encrypted with a customer-managed key: CloudWatch alarms cannot publish to a topic
encrypted with the AWS-managed aws/sns key, whose policy cannot grant cloudwatch.amazonaws.com.
"""

from __future__ import annotations

from aws_cdk import Aws, Duration
from aws_cdk import aws_apigateway as apigw
from aws_cdk import aws_cloudwatch as cw
from aws_cdk import aws_cloudwatch_actions as cw_actions
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subscriptions
from aws_cdk import aws_sqs as sqs
from aws_cdk import aws_stepfunctions as sfn
from constructs import Construct

from shared import constants as c

PLAN_HARD_BLOCKED_METRIC = "plan.hard_blocked"
BUILD_COST_METRIC = "build.cost_usd"
PLAN_HARD_BLOCKED_THRESHOLD = 3
DEFAULT_QUEUE_AGE_SECONDS = 900
PIPES_NAMESPACE = "AWS/EventBridge/Pipes"


class Monitoring(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        service_name: str,
        functions: dict[str, lambda_.IFunction],
        dead_letter_queues: dict[str, sqs.IQueue],
        work_queues: dict[str, sqs.IQueue],
        state_machine: sfn.IStateMachine,
        rest_api: apigw.RestApi,
        alarm_email: str | None,
        cost_alarm_usd_per_hour: float,
        error_rate_alarm_percent: float,
        failed_executions_threshold: int,
        tables: dict[str, dynamodb.ITable] | None = None,
        pipe_name: str | None = None,
        queue_age_thresholds: dict[str, int] | None = None,
    ) -> None:
        super().__init__(scope, construct_id)
        self.alarms: list[cw.Alarm] = []
        self.functions = dict(functions)  # every function the alarms watch

        key = kms.Key(self, "AlarmTopicKey", enable_key_rotation=True, description="Stepwise alarm topic encryption")
        key.grant(iam.ServicePrincipal("cloudwatch.amazonaws.com"), "kms:Decrypt", "kms:GenerateDataKey*")
        self.topic = sns.Topic(self, "Alarms", display_name="Stepwise alarms", master_key=key, enforce_ssl=True)
        # A topic policy replaces SNS's default one (which let the account's services publish), so the
        # alarms' publisher is named here: CloudWatch, for alarms of this account and region only.
        self.topic.add_to_resource_policy(
            iam.PolicyStatement(
                sid="CloudWatchAlarmsPublish",
                principals=[iam.ServicePrincipal("cloudwatch.amazonaws.com")],
                actions=["sns:Publish"],
                resources=[self.topic.topic_arn],
                conditions={
                    "StringEquals": {"aws:SourceAccount": Aws.ACCOUNT_ID},
                    "ArnLike": {
                        "aws:SourceArn": f"arn:{Aws.PARTITION}:cloudwatch:{Aws.REGION}:{Aws.ACCOUNT_ID}:alarm:*"
                    },
                },
            )
        )
        if alarm_email:
            self.topic.add_subscription(subscriptions.EmailSubscription(alarm_email))
        action = cw_actions.SnsAction(self.topic)

        def alarm(
            construct_id: str,
            description: str,
            *,
            metric: cw.IMetric,
            threshold: float = 0,
            comparison_operator: cw.ComparisonOperator = cw.ComparisonOperator.GREATER_THAN_THRESHOLD,
            evaluation_periods: int = 1,
            datapoints_to_alarm: int | None = None,
        ) -> cw.Alarm:
            """An alarm notifying the topic; by default it fires on any datapoint above zero."""
            created = cw.Alarm(
                self,
                construct_id,
                alarm_description=description,
                metric=metric,
                threshold=threshold,
                comparison_operator=comparison_operator,
                evaluation_periods=evaluation_periods,
                datapoints_to_alarm=datapoints_to_alarm,
                treat_missing_data=cw.TreatMissingData.NOT_BREACHING,
            )
            created.add_alarm_action(action)
            created.add_ok_action(action)
            self.alarms.append(created)
            return created

        # Dead letters: anything there needs a human (the tasks DLQ is drained by the dispatcher,
        # so only a message that stays visible for 15 minutes counts).
        for name, queue in dead_letter_queues.items():
            periods = 3 if name == "tasks" else 1
            alarm(
                f"{_title(name)}DlqNotEmpty",
                f"Messages are waiting in the {name} dead-letter queue",
                metric=queue.metric_approximate_number_of_messages_visible(
                    period=Duration.minutes(5), statistic="Maximum"
                ),
                threshold=0,
                comparison_operator=cw.ComparisonOperator.GREATER_THAN_THRESHOLD,
                evaluation_periods=periods,
                datapoints_to_alarm=periods,
            )

        alarm(
            "FailedExecutions",
            f"At least {failed_executions_threshold} build executions failed within 15 minutes",
            metric=state_machine.metric_failed(period=Duration.minutes(15), statistic="Sum"),
            threshold=failed_executions_threshold,
            comparison_operator=cw.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
            evaluation_periods=1,
        )

        hard_blocked = cw.Metric(
            namespace=c.METRICS_NAMESPACE,
            metric_name=PLAN_HARD_BLOCKED_METRIC,
            dimensions_map={"service": service_name},
            statistic="Sum",
            period=Duration.minutes(10),
        )
        alarm(
            "PlanHardBlocked",
            f"More than {PLAN_HARD_BLOCKED_THRESHOLD} plans were hard-blocked by cycles within 10 minutes",
            metric=hard_blocked,
            threshold=PLAN_HARD_BLOCKED_THRESHOLD,
            comparison_operator=cw.ComparisonOperator.GREATER_THAN_THRESHOLD,
            evaluation_periods=1,
        )

        cost = cw.Metric(
            namespace=c.METRICS_NAMESPACE,
            metric_name=BUILD_COST_METRIC,
            dimensions_map={"service": service_name},
            statistic="Sum",
            period=Duration.hours(1),
        )
        alarm(
            "CostPerHour",
            f"AI spend over the last hour is above {cost_alarm_usd_per_hour} USD",
            metric=cost,
            threshold=cost_alarm_usd_per_hour,
            comparison_operator=cw.ComparisonOperator.GREATER_THAN_THRESHOLD,
            evaluation_periods=1,
        )

        error_rates: dict[str, cw.MathExpression] = {}
        for name, fn in functions.items():
            rate = cw.MathExpression(
                # Ids are unique per function: the dashboard graphs every rate in one widget.
                expression=f"IF(inv_{name} > 0, 100 * err_{name} / inv_{name}, 0)",
                using_metrics={
                    f"err_{name}": fn.metric_errors(period=Duration.minutes(5), statistic="Sum"),
                    f"inv_{name}": fn.metric_invocations(period=Duration.minutes(5), statistic="Sum"),
                },
                label=f"{name} error rate (%)",
                period=Duration.minutes(5),
            )
            error_rates[name] = rate
            alarm(
                f"{_title(name)}ErrorRate",
                f"The {name} function's error rate is above {error_rate_alarm_percent}%",
                metric=rate,
                threshold=error_rate_alarm_percent,
                comparison_operator=cw.ComparisonOperator.GREATER_THAN_THRESHOLD,
                evaluation_periods=3,
                datapoints_to_alarm=2,
            )

        alarm(
            "Api5xx",
            "The API answered 5xx (client input must never produce one)",
            metric=rest_api.metric_server_error(period=Duration.minutes(5), statistic="Sum"),
            threshold=5,
            comparison_operator=cw.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
            evaluation_periods=1,
        )

        # Work that waits: the oldest message of each work queue (a stuck consumer, a throttled
        # function, a poison message cycling until its DLQ).
        ages: list[cw.IMetric] = []
        for name, queue in work_queues.items():
            threshold = (queue_age_thresholds or {}).get(name, DEFAULT_QUEUE_AGE_SECONDS)
            age = queue.metric_approximate_age_of_oldest_message(period=Duration.minutes(5), statistic="Maximum")
            ages.append(age.with_(label=name))
            alarm(
                f"{_title(name)}QueueOldestMessage",
                f"The oldest message on the {name} queue is older than {threshold} s",
                metric=age,
                threshold=threshold,
                comparison_operator=cw.ComparisonOperator.GREATER_THAN_THRESHOLD,
                evaluation_periods=2,
                datapoints_to_alarm=2,
            )

        # Throttles: a function at its reserved concurrency (plan: the cap on plans in flight) or the
        # account's limit. Events wait or fail; the cap may need raising.
        throttles: list[cw.IMetric] = []
        for name, fn in functions.items():
            metric = fn.metric_throttles(period=Duration.minutes(5), statistic="Sum")
            throttles.append(metric.with_(label=name))
            alarm(
                f"{_title(name)}Throttles",
                f"The {name} function was throttled in 2 of the last 3 five-minute periods",
                metric=metric,
                threshold=0,
                comparison_operator=cw.ComparisonOperator.GREATER_THAN_THRESHOLD,
                evaluation_periods=3,
                datapoints_to_alarm=2,
            )

        # Recursion: task and dispatch allow their designed loops; a drop anywhere means a loop that
        # Lambda stopped, i.e. lost work.
        dropped = cw.MathExpression(
            expression=" + ".join(f"FILL(rec_{n}, 0)" for n in functions),
            using_metrics={
                f"rec_{n}": fn.metric("RecursiveInvocationsDropped", period=Duration.minutes(5), statistic="Sum")
                for n, fn in functions.items()
            },
            label="recursive invocations dropped",
            period=Duration.minutes(5),
        )
        alarm(
            "RecursiveInvocationsDropped",
            "Lambda stopped a recursive loop: an invocation of a Stepwise function was dropped",
            metric=dropped,
        )

        alarm(
            "TimedOutExecutions",
            "A build execution timed out (its state machine limit, not the build's own timeout)",
            metric=state_machine.metric_timed_out(period=Duration.minutes(5), statistic="Sum"),
        )
        alarm(
            "ThrottledExecutions",
            "Step Functions throttled build executions (state transitions or StartExecution)",
            metric=state_machine.metric_throttled(period=Duration.minutes(5), statistic="Sum"),
        )

        if pipe_name is not None:
            pipe_failures = cw.MathExpression(
                expression="FILL(failed, 0) + FILL(target, 0)",
                using_metrics={
                    "failed": _pipe_metric(pipe_name, "ExecutionFailed"),
                    "target": _pipe_metric(pipe_name, "TargetStageFailed"),
                },
                label="outbox pipe failures",
                period=Duration.minutes(5),
            )
            alarm(
                "OutboxPipeFailures",
                "The outbox pipe failed to move events to the webhook queue (they are retried, then "
                "dead-lettered to the outbox DLQ)",
                metric=pipe_failures,
            )

        table_throttles: list[cw.IMetric] = []
        for name, table in (tables or {}).items():
            metric = cw.MathExpression(
                expression=f"FILL(r_{name}, 0) + FILL(w_{name}, 0)",
                using_metrics={
                    f"r_{name}": _table_metric(table, "ReadThrottleEvents"),
                    f"w_{name}": _table_metric(table, "WriteThrottleEvents"),
                },
                label=name,
                period=Duration.minutes(5),
            )
            table_throttles.append(metric)
            alarm(
                f"{_title(name)}TableThrottles",
                f"DynamoDB throttled reads or writes on the {name} table",
                metric=metric,
            )

        # --- dashboard ----------------------------------------------------------------------------
        self.dashboard = cw.Dashboard(self, "Dashboard", default_interval=Duration.hours(6))
        self.dashboard.add_widgets(
            cw.AlarmStatusWidget(title="Alarms", alarms=list(self.alarms), width=24, height=4),
        )
        self.dashboard.add_widgets(
            cw.GraphWidget(
                title="Builds (executions)",
                width=8,
                left=[
                    state_machine.metric_started(statistic="Sum"),
                    state_machine.metric_succeeded(statistic="Sum"),
                    state_machine.metric_failed(statistic="Sum"),
                    state_machine.metric_aborted(statistic="Sum"),
                ],
            ),
            cw.GraphWidget(title="AI cost (USD per hour)", width=8, left=[cost]),
            cw.GraphWidget(title="Hard-blocked plans", width=8, left=[hard_blocked]),
        )
        self.dashboard.add_widgets(
            cw.GraphWidget(
                title="Queue depth",
                width=12,
                left=[
                    q.metric_approximate_number_of_messages_visible(label=n, statistic="Maximum")
                    for n, q in work_queues.items()
                ],
            ),
            cw.GraphWidget(
                title="Dead-letter queues",
                width=12,
                left=[
                    q.metric_approximate_number_of_messages_visible(label=n, statistic="Maximum")
                    for n, q in dead_letter_queues.items()
                ],
            ),
        )
        self.dashboard.add_widgets(
            cw.GraphWidget(title="Function error rate (%)", width=12, left=list(error_rates.values())),
            cw.GraphWidget(
                title="Function duration p95 (ms)",
                width=12,
                left=[fn.metric_duration(label=n, statistic="p95") for n, fn in functions.items()],
            ),
        )
        self.dashboard.add_widgets(
            cw.GraphWidget(
                title="API requests and errors",
                width=12,
                left=[
                    rest_api.metric_count(statistic="Sum"),
                    rest_api.metric_client_error(statistic="Sum"),
                    rest_api.metric_server_error(statistic="Sum"),
                ],
            ),
            cw.GraphWidget(title="API latency p95 (ms)", width=12, left=[rest_api.metric_latency(statistic="p95")]),
        )
        self.dashboard.add_widgets(
            cw.GraphWidget(title="Oldest message per queue (s)", width=8, left=ages),
            cw.GraphWidget(title="Function throttles", width=8, left=throttles),
            cw.GraphWidget(title="DynamoDB throttles", width=8, left=table_throttles or [dropped]),
        )


def _title(name: str) -> str:
    return "".join(part.capitalize() for part in name.replace("_", "-").split("-"))


def _pipe_metric(pipe_name: str, metric_name: str) -> cw.Metric:
    return cw.Metric(
        namespace=PIPES_NAMESPACE,
        metric_name=metric_name,
        dimensions_map={"PipeName": pipe_name},
        statistic="Sum",
        period=Duration.minutes(5),
    )


def _table_metric(table: dynamodb.ITable, metric_name: str) -> cw.Metric:
    return cw.Metric(
        namespace="AWS/DynamoDB",
        metric_name=metric_name,
        dimensions_map={"TableName": table.table_name},
        statistic="Sum",
        period=Duration.minutes(5),
    )
