"""The Stepwise stack: one construct per concern, wired together here and nowhere else."""

from __future__ import annotations

from typing import Any

from aws_cdk import Aws, CfnOutput, Stack
from aws_cdk import aws_cloudwatch_actions as cw_actions
from constructs import Construct

from infra.config import StackConfig
from infra.constructs.api import Api
from infra.constructs.dashboard import Dashboard
from infra.constructs.functions import SERVICE_NAME, Functions, log_retention
from infra.constructs.monitoring import Monitoring
from infra.constructs.outbox import Outbox
from infra.constructs.queues import Queues
from infra.constructs.secrets import Secrets
from infra.constructs.storage import Storage
from infra.constructs.websocket import WebSocket
from infra.constructs.workflow import Workflow
from shared import constants as c
from shared.webhooks.delivery import delivery_delay_s


class StepwiseStack(Stack):
    def __init__(self, scope: Construct, construct_id: str, *, config: StackConfig, **kwargs: Any) -> None:
        super().__init__(scope, construct_id, **kwargs)
        self.config = config
        retention = log_retention(config.deployment.log_retention_days)

        d = config.deployment
        self.storage = Storage(
            self, "Storage", record_ttl_days=config.record_ttl_days, deletion_protection=config.production
        )
        self.secrets = Secrets(self, "Secrets")
        # The queues' visibility timeouts follow their consumers' timeouts (`shared.resources`).
        self.queues = Queues(
            self,
            "Queues",
            task_timeout_s=config.settings.task_timeout_seconds,
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
        self.workflow = Workflow(
            self,
            "Workflow",
            plan=fns["plan"],
            dispatch=fns["dispatch"],
            log_retention=retention,
            production=config.production,
        )
        self.functions.connect_workflow(self.workflow.state_machine)
        self.outbox = Outbox(
            self,
            "Outbox",
            events_table=self.storage.events,
            webhook_queue=self.queues.webhooks,
            dead_letter_queue=self.queues.outbox_dlq,
            log_retention=retention,
        )
        # The web dashboard (S3 + CloudFront); its origin is known now, its config once the APIs exist.
        self.dashboard = Dashboard(self, "Dashboard", access_logs=self.storage.access_logs)
        # The API answers browser calls from the frontend origins and the dashboard (CORS headers on
        # every response, gateway error responses included).
        origins = [config.frontend_origin, self.dashboard.origin]
        fns["api"].add_environment(c.STEPWISE_CORS_ORIGINS, ",".join(origins))
        self.api = Api(
            self,
            "Api",
            handler=fns["api"],
            frontend_origins=origins,
            rate_limit=d.api_rate_limit,
            burst_limit=d.api_burst_limit,
            log_retention=retention,
            callback_urls=config.callback_urls,
            logout_urls=config.logout_urls,
            auth_domain_prefix=d.auth_domain_prefix,
            deletion_protection=config.production,
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
            rate_limit=d.api_rate_limit,
            burst_limit=d.api_burst_limit,
            service_name=SERVICE_NAME,
        )
        # Both APIs' access logs need the account's API Gateway logging role: the app deploys the
        # shared StepwiseApiGatewayAccount stack before this one (infra/account.py).
        self.dashboard.publish(
            api_url=self.api.url,
            api_host=f"{self.api.rest_api.rest_api_id}.execute-api.{Aws.REGION}.{Aws.URL_SUFFIX}",
            websocket_url=self.websocket.url,
            user_pool=self.api.user_pool,
            user_pool_client=self.api.client,
            hosted_ui=self.api.domain,
        )
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
            cost_alarm_usd_per_hour=d.cost_alarm_usd_per_hour,
            error_rate_alarm_percent=d.error_rate_alarm_percent,
            failed_executions_threshold=d.failed_executions_alarm_threshold,
            tables=dict(self.storage.tables),
            pipe_name=self.outbox.pipe.ref,
            queue_age_thresholds=queue_age_thresholds(config),
        )

        outputs = {
            "ApiUrl": (self.api.url, "Base URL of the HTTP API (docs/api.md)"),
            "UserPoolId": (self.api.user_pool.user_pool_id, "Cognito user pool: create users here"),
            "UserPoolClientId": (self.api.client.user_pool_client_id, "Cognito app client for the frontend"),
            "FilesBucketName": (
                self.storage.files.bucket_name,
                "Generated files: builds/{buildId}/files/{path}",
            ),
            "DashboardUrl": (self.dashboard.url, "The web dashboard: sign in with a Cognito user"),
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
            "Stage": (config.stage, "The committed stage (infra/stages/<stage>.json) this stack was built from"),
        }
        if self.api.domain is not None:
            outputs["SignInDomain"] = (
                self.api.domain.base_url(),
                "Cognito hosted sign-in (authorization code + PKCE) for the dashboard",
            )
        self.websocket.broadcaster_errors.add_alarm_action(cw_actions.SnsAction(self.monitoring.topic))
        self.websocket.broadcaster_errors.add_ok_action(cw_actions.SnsAction(self.monitoring.topic))
        for output_id, (value, description) in outputs.items():
            CfnOutput(self, output_id, value=value, description=description)


def queue_age_thresholds(config: StackConfig) -> dict[str, int]:
    """Seconds the oldest message of each work queue may wait before an alarm. A webhook event
    waits through its own retry schedule when a receiver is down, so that queue's threshold adds it."""
    base = config.deployment.queue_age_alarm_seconds
    s = config.settings
    schedule = sum(
        delivery_delay_s(n, s.webhook_backoff_base_seconds, s.webhook_backoff_max_seconds, None, rng=lambda: 1.0)
        for n in range(1, s.webhook_max_attempts)
    )
    return {"tasks": base, "task-finished": base, "webhooks": base + int(schedule)}
