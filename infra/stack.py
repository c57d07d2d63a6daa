"""The Stepwise stack: one construct per concern, wired together here and nowhere else."""

from __future__ import annotations

from typing import Any

from aws_cdk import CfnOutput, Stack
from aws_cdk import aws_cloudwatch_actions as cw_actions
from constructs import Construct

from infra.config import StackConfig
from infra.constructs.api import Api
from infra.constructs.functions import SERVICE_NAME, Functions, function_specs, log_retention
from infra.constructs.monitoring import Monitoring
from infra.constructs.outbox import Outbox
from infra.constructs.queues import Queues
from infra.constructs.secrets import Secrets
from infra.constructs.storage import Storage
from infra.constructs.websocket import WebSocket
from infra.constructs.workflow import Workflow
from shared import constants as c


class StepwiseStack(Stack):
    def __init__(self, scope: Construct, construct_id: str, *, config: StackConfig, **kwargs: Any) -> None:
        super().__init__(scope, construct_id, **kwargs)
        self.config = config
        retention = log_retention(config.log_retention_days)

        self.storage = Storage(self, "Storage", record_ttl_days=config.record_ttl_days)
        self.secrets = Secrets(self, "Secrets")
        # Function timeouts decide the queues' visibility timeouts, so they are known first.
        specs = function_specs(config)
        self.queues = Queues(
            self,
            "Queues",
            task_function_timeout=specs["task"].timeout,
            dispatch_function_timeout=specs["dispatch"].timeout,
            webhook_function_timeout=specs["webhook"].timeout,
            webhook_max_attempts=config.settings.webhook_max_attempts,
        )
        self.functions = Functions(
            self,
            "Functions",
            config=config,
            storage=self.storage,
            queues=self.queues,
            secrets=self.secrets,
        )
        fns = self.functions.functions
        self.workflow = Workflow(self, "Workflow", plan=fns["plan"], dispatch=fns["dispatch"], log_retention=retention)
        self.functions.connect_workflow(self.workflow.state_machine)
        self.outbox = Outbox(
            self,
            "Outbox",
            events_table=self.storage.events,
            webhook_queue=self.queues.webhooks,
            dead_letter_queue=self.queues.outbox_dlq,
            log_retention=retention,
        )
        # The API answers browser calls from the frontend origin (CORS headers on every response).
        fns["api"].add_environment(c.CORS_ALLOW_ORIGIN, config.frontend_origin)
        self.api = Api(
            self,
            "Api",
            handler=fns["api"],
            frontend_origin=config.frontend_origin,
            rate_limit=config.api_rate_limit,
            burst_limit=config.api_burst_limit,
            log_retention=retention,
            cloudwatch_role=config.api_cloudwatch_role,
        )
        self.websocket = WebSocket(
            self,
            "WebSocket",
            functions=self.functions,
            builds_table=self.storage.builds,
            events_table=self.storage.events,
            user_pool=self.api.user_pool,
            user_pool_client=self.api.client,
            log_retention=retention,
            rate_limit=config.api_rate_limit,
            burst_limit=config.api_burst_limit,
            service_name=SERVICE_NAME,
        )
        # Stage access logs need the account's API Gateway logging role, which the REST API sets.
        account = self.api.rest_api.node.try_find_child("Account")
        if account is not None:
            self.websocket.stage.node.add_dependency(account)
        self.monitoring = Monitoring(
            self,
            "Monitoring",
            service_name=SERVICE_NAME,
            functions={**fns, **self.websocket.functions},
            dead_letter_queues={**self.queues.dead_letter_queues, "broadcast": self.websocket.broadcast_dlq},
            work_queues={
                "tasks": self.queues.tasks,
                "task-finished": self.queues.task_finished,
                "webhooks": self.queues.webhooks,
            },
            state_machine=self.workflow.state_machine,
            rest_api=self.api.rest_api,
            alarm_email=config.alarm_email,
            cost_alarm_usd_per_hour=config.cost_alarm_usd_per_hour,
            error_rate_alarm_percent=config.error_rate_alarm_percent,
            failed_executions_threshold=config.failed_executions_alarm_threshold,
        )

        outputs = {
            "ApiUrl": (self.api.url, "Base URL of the HTTP API (CONTRACT section 2)"),
            "UserPoolId": (self.api.user_pool.user_pool_id, "Cognito user pool: create users here"),
            "UserPoolClientId": (self.api.client.user_pool_client_id, "Cognito app client for the frontend"),
            "FilesBucketName": (
                self.storage.files.bucket_name,
                "Generated files: builds/{buildId}/files/{path}",
            ),
            "StateMachineArn": (self.workflow.state_machine.state_machine_arn, "One execution per build"),
            "WebhookSecretArn": (self.secrets.webhook.secret_arn, "Webhook signing secret(s)"),
            "ProviderSecretArn": (self.secrets.providers.secret_arn, "AI provider API keys (JSON)"),
            "WebhookQueueUrl": (self.queues.webhooks.queue_url, "Webhook delivery queue"),
            "WebhookDlqUrl": (self.queues.webhooks_dlq.queue_url, "Dead webhook deliveries (redrive)"),
            "AlarmTopicArn": (self.monitoring.topic.topic_arn, "SNS topic every alarm notifies"),
            "DashboardName": (self.monitoring.dashboard.dashboard_name, "CloudWatch dashboard"),
            "WebSocketUrl": (
                self.websocket.url,
                "Live events: connect to this URL with ?token=<Cognito JWT> (docs/websocket.md)",
            ),
        }
        self.websocket.broadcaster_errors.add_alarm_action(cw_actions.SnsAction(self.monitoring.topic))
        self.websocket.broadcaster_errors.add_ok_action(cw_actions.SnsAction(self.monitoring.topic))
        for output_id, (value, description) in outputs.items():
            CfnOutput(self, output_id, value=value, description=description)
