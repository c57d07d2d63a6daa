"""The five Lambda functions, built by one helper, with least-privilege roles and their triggers.

Every function: python3.12 on arm64, X-Ray active tracing, JSON logs into its own log group with a
retention, the shared dependency layer, and code holding only `shared/` and its own package.
Each role starts empty (no AWS managed policy): it may write its own log group, send traces, and
whatever the grants below name, on named resources only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from aws_cdk import Duration, Fn, Stack
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_lambda_event_sources as sources
from aws_cdk import aws_logs as logs
from aws_cdk import aws_stepfunctions as sfn
from constructs import Construct

from infra.config import StackConfig
from infra.constructs.queues import Queues
from infra.constructs.secrets import Secrets
from infra.constructs.storage import FILES_PREFIX, GENERATED_FILES, INPUT_FILES, Storage
from infra.nag import acknowledge, arn_prefix
from infra.packaging import dependency_layer_code, function_code
from shared import constants as c
from shared import resources
from shared.resources import BUILDS_BY_OWNER_INDEX

# Powertools service name shared by every function, so metric alarms can name one dimension set.
SERVICE_NAME = c.METRICS_NAMESPACE.lower()

# DynamoDB actions by intent. Transactions are authorised per item by these same actions.
DDB_READ = ("dynamodb:GetItem", "dynamodb:BatchGetItem", "dynamodb:Query")
DDB_WRITE = (
    "dynamodb:PutItem",
    "dynamodb:UpdateItem",
    "dynamodb:BatchWriteItem",
    "dynamodb:ConditionCheckItem",
)
DDB_READ_WRITE = DDB_READ + DDB_WRITE
DDB_IDEMPOTENCY = ("dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem")
TASK_RESPONSE_ACTIONS = ("states:SendTaskSuccess", "states:SendTaskFailure")
PROVIDERS_WITH_KEYS = ("anthropic", "openai")




@dataclass(frozen=True)
class FunctionSpec:
    memory_mb: int
    timeout: Duration
    description: str
    reserved_concurrency: int | None = None
    # task -> tasks queue -> task and task -> task-finished -> dispatch -> tasks queue are loops by
    # design (retries, fan-out, a deep DAG); Lambda's recursion detection would stop them after
    # ~16 hops that carry the same trace header.
    recursive: bool = False


def function_specs(config: StackConfig) -> dict[str, FunctionSpec]:
    """Memory, timeout and concurrency per function (keys are exactly `shared.constants.FUNCTION_HANDLERS`).
    Memory and time limits come from `shared.resources`, which the local runtime runs with too."""
    d = config.deployment
    described = resources.functions(config.settings.task_timeout_seconds)

    def spec(name: str, description: str, **kw: Any) -> FunctionSpec:
        fn = described[name]
        return FunctionSpec(fn.memory_mb, Duration.seconds(fn.timeout_s), description, **kw)

    return {
        "api": spec("api", "HTTP API behind API Gateway (docs/api.md)"),
        # Reserved concurrency caps plans in flight (each streams an LLM reply: the main cost driver).
        "plan": spec(
            "plan",
            "Streams, validates and stores the build plan",
            reserved_concurrency=d.plan_reserved_concurrency,
        ),
        # Reserved so a fan-out of tasks can never starve the dispatcher (and capped by it).
        "dispatch": spec(
            "dispatch",
            "Runs the task DAG: seeds, advances, finalizes",
            reserved_concurrency=d.dispatch_reserved_concurrency,
            recursive=True,
        ),
        # its memory bounds the tasks one invocation runs side by side (shared.limits.concurrent_tasks)
        "task": spec("task", "Runs one task and writes its files", recursive=True),
        "webhook": spec("webhook", "Signs and delivers webhook events"),
    }


class Functions(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: StackConfig,
        storage: Storage,
        queues: Queues,
        secrets: Secrets,
    ) -> None:
        super().__init__(scope, construct_id)
        self._config = config
        self.specs = function_specs(config)
        unknown = set(self.specs) ^ set(c.FUNCTION_HANDLERS)
        if unknown:
            raise ValueError(f"function specs and FUNCTION_HANDLERS disagree on {sorted(unknown)}")

        self.layer = lambda_.LayerVersion(
            self,
            "Dependencies",
            code=dependency_layer_code(),
            compatible_runtimes=[lambda_.Runtime.PYTHON_3_12],
            compatible_architectures=[lambda_.Architecture.ARM_64],
            description="Stepwise runtime dependencies (infra/layer-requirements.txt, hash-locked)",
        )

        t = storage
        wiring: dict[str, dict[str, str]] = {
            "api": {
                c.BUILDS_TABLE: t.builds.table_name,
                c.TASKS_TABLE: t.tasks.table_name,
                c.EVENTS_TABLE: t.events.table_name,
                c.IDEMPOTENCY_TABLE: t.idempotency.table_name,
                c.FILES_BUCKET: t.files.bucket_name,
                c.TASK_FINISHED_QUEUE_URL: queues.task_finished.queue_url,
            },
            "plan": {
                c.BUILDS_TABLE: t.builds.table_name,
                c.TASKS_TABLE: t.tasks.table_name,
                c.EVENTS_TABLE: t.events.table_name,
                c.FILES_BUCKET: t.files.bucket_name,
            },
            "dispatch": {
                c.BUILDS_TABLE: t.builds.table_name,
                c.TASKS_TABLE: t.tasks.table_name,
                c.EVENTS_TABLE: t.events.table_name,
                c.TASKS_QUEUE_URL: queues.tasks.queue_url,
            },
            "task": {
                c.BUILDS_TABLE: t.builds.table_name,
                c.TASKS_TABLE: t.tasks.table_name,
                c.EVENTS_TABLE: t.events.table_name,
                c.CACHE_TABLE: t.cache.table_name,
                c.FILES_BUCKET: t.files.bucket_name,
                c.TASKS_QUEUE_URL: queues.tasks.queue_url,
                c.TASK_FINISHED_QUEUE_URL: queues.task_finished.queue_url,
            },
            "webhook": {
                c.BUILDS_TABLE: t.builds.table_name,
                c.EVENTS_TABLE: t.events.table_name,
                c.WEBHOOK_QUEUE_URL: queues.webhooks.queue_url,
                c.WEBHOOK_DLQ_URL: queues.webhooks_dlq.queue_url,
                c.WEBHOOK_SECRET_ARN: secrets.webhook.secret_arn,
            },
        }
        # Only the API-key vendors read the provider secret; Bedrock signs with the role, the mock
        # needs nothing. The secret itself stays (retained) so switching back keeps the stored keys.
        self.uses_provider_secret = config.settings.ai_provider in PROVIDERS_WITH_KEYS
        if self.uses_provider_secret:
            for name in ("plan", "task"):
                wiring[name][c.PROVIDER_SECRET_ARN] = secrets.providers.secret_arn
        self.functions: dict[str, lambda_.Function] = {
            name: self._function(name, self.specs[name], wiring[name]) for name in c.FUNCTION_HANDLERS
        }
        api, plan, dispatch, task, webhook = (self.functions[n] for n in ("api", "plan", "dispatch", "task", "webhook"))

        # --- data ---------------------------------------------------------------------------------
        for fn in (api, plan, dispatch, task):
            for table in (t.builds, t.tasks, t.events):
                _grant_table(fn, table, DDB_READ_WRITE)
        # Only the API lists a caller's builds, so only it may query the byOwner index.
        _grant_table(api, t.builds, ("dynamodb:Query",), indexes=(BUILDS_BY_OWNER_INDEX,))
        # Approving an edited plan deletes the tasks it dropped.
        _grant_table(api, t.tasks, ("dynamodb:DeleteItem",))
        _grant_table(api, t.idempotency, DDB_IDEMPOTENCY)
        _grant_table(task, t.cache, DDB_READ_WRITE)
        for table in (t.builds, t.events):
            _grant_table(webhook, table, ("dynamodb:GetItem", "dynamodb:Query", "dynamodb:UpdateItem"))

        # Files: builds/{buildId}/input/{path} (the request's files, written by the API) and
        # builds/{buildId}/files/{path} (generated, written by tasks). ListBucket on the prefix lets
        # a missing key answer NoSuchKey (a 404) instead of AccessDenied.
        bucket_ref = self._logical(t.files)
        for fn in (api, plan, task):
            iam.Grant.add_to_principal(
                grantee=fn, actions=["s3:GetObject"], resource_arns=[t.files.arn_for_objects(f"{FILES_PREFIX}*")]
            )
            fn.add_to_role_policy(
                iam.PolicyStatement(
                    actions=["s3:ListBucket"],
                    resources=[t.files.bucket_arn],
                    conditions={"StringLike": {"s3:prefix": [f"{FILES_PREFIX}*"]}},
                )
            )
            acknowledge(
                fn.role or fn,
                f"AwsSolutions-IAM5[Resource::<{bucket_ref}.Arn>/{FILES_PREFIX}*]",
                "Reads are limited to the builds/ prefix; object keys embed the build id and file path, "
                "which are only known at run time.",
            )
        for fn, kind in ((api, INPUT_FILES), (task, GENERATED_FILES)):
            pattern = f"{FILES_PREFIX}*/{kind}/*"
            iam.Grant.add_to_principal(
                grantee=fn, actions=["s3:PutObject"], resource_arns=[t.files.arn_for_objects(pattern)]
            )
            acknowledge(
                fn.role or fn,
                f"AwsSolutions-IAM5[Resource::<{bucket_ref}.Arn>/{pattern}]",
                f"Writes are limited to builds/<buildId>/{kind}/; the build id and file path are only "
                "known at run time.",
            )

        # --- queues -------------------------------------------------------------------------------
        described = resources.queues(webhook_max_attempts=config.settings.webhook_max_attempts)
        batch = {name: q.batch_size for name, q in described.items()}
        queues.tasks.grant_send_messages(dispatch)
        queues.tasks.grant_send_messages(task)  # a retry is a new, delayed message
        queues.task_finished.grant_send_messages(task)
        queues.task_finished.grant_send_messages(api)  # cancel tells the dispatcher to halt
        queues.webhooks_dlq.grant_send_messages(webhook)  # refused addresses dead-letter at once
        task.add_event_source(
            sources.SqsEventSource(
                queues.tasks,
                batch_size=batch["tasks"],
                report_batch_item_failures=True,
                max_concurrency=config.deployment.task_max_concurrency,
            )
        )
        dispatch.add_event_source(
            sources.SqsEventSource(
                queues.task_finished,
                batch_size=batch["task-finished"],
                report_batch_item_failures=True,
                max_concurrency=config.dispatch_queue_concurrency,
            )
        )
        dispatch.add_event_source(
            sources.SqsEventSource(
                queues.tasks_dlq,
                batch_size=batch["tasks-dlq"],
                report_batch_item_failures=True,
                max_concurrency=2,
            )
        )
        webhook.add_event_source(
            sources.SqsEventSource(
                queues.webhooks,
                batch_size=batch["webhooks"],
                report_batch_item_failures=True,
                max_concurrency=config.deployment.webhook_max_concurrency,
            )
        )

        # --- secrets ------------------------------------------------------------------------------
        if self.uses_provider_secret:
            secrets.providers.grant_read(plan)
            secrets.providers.grant_read(task)
        secrets.webhook.grant_read(webhook)

        # --- Claude on Amazon Bedrock ---------------------------------------------------------------
        if config.settings.ai_provider == "bedrock":
            for fn in (plan, task):
                grant_bedrock_invoke(fn, config.settings.bedrock_model_id)

    # ----------------------------------------------------------------------------------------------
    def add_function(self, name: str, spec: FunctionSpec, wiring: dict[str, str], *, handler: str) -> lambda_.Function:
        """One more function built like the five (its code is `functions/<name>/`)."""
        return self._function(name, spec, wiring, handler=handler)

    def _function(
        self, name: str, spec: FunctionSpec, wiring: dict[str, str], *, handler: str | None = None
    ) -> lambda_.Function:
        title = "".join(part.capitalize() for part in name.split("_"))
        role = iam.Role(
            self,
            f"{title}Role",
            assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
            description=f"Stepwise {name} function",
        )
        log_group = logs.LogGroup(
            self, f"{title}Logs", retention=log_retention(self._config.deployment.log_retention_days)
        )
        log_group.grant_write(role)
        fn = lambda_.Function(
            self,
            title,
            runtime=lambda_.Runtime.PYTHON_3_12,
            architecture=lambda_.Architecture.ARM_64,
            handler=handler or c.FUNCTION_HANDLERS[name],
            code=function_code(name),
            layers=[self.layer],
            role=role,
            memory_size=spec.memory_mb,
            timeout=spec.timeout,
            description=spec.description,
            reserved_concurrent_executions=spec.reserved_concurrency,
            recursive_loop=lambda_.RecursiveLoop.ALLOW if spec.recursive else lambda_.RecursiveLoop.TERMINATE,
            tracing=lambda_.Tracing.ACTIVE,
            logging_format=lambda_.LoggingFormat.JSON,
            application_log_level_v2=lambda_.ApplicationLogLevel.INFO,
            system_log_level_v2=lambda_.SystemLogLevel.WARN,
            log_group=log_group,
            environment={
                **self._config.app_env,
                **wiring,
                c.POWERTOOLS_SERVICE_NAME: SERVICE_NAME,
                c.POWERTOOLS_METRICS_NAMESPACE: c.METRICS_NAMESPACE,
            },
        )
        acknowledge(
            role,
            "AwsSolutions-IAM5[Resource::*]",
            "X-Ray PutTraceSegments/PutTelemetryRecords support no resource-level permissions; "
            "this is the only '*' statement on the role.",
        )
        acknowledge(
            fn,
            "AwsSolutions-L1",
            "Pinned to python3.12: the dependency layer is built for cp312 wheels and the code is "
            "tested on it; move runtime and layer together.",
        )
        return fn

    def connect_workflow(self, state_machine: sfn.StateMachine) -> None:
        """Give the API the state machine, and the API and dispatcher the task-token callbacks.

        The dispatcher's grant is a separate policy: the state machine depends on the dispatcher, and
        a function depends on its role's default policy, so putting it there would be a cycle.
        """
        api, dispatch = self.functions["api"], self.functions["dispatch"]
        api.add_environment(c.STATE_MACHINE_ARN, state_machine.state_machine_arn)
        state_machine.grant_start_execution(api)
        state_machine.grant_execution(api, "states:StopExecution")
        state_machine.grant(api, *TASK_RESPONSE_ACTIONS)
        sm_ref = self._logical(state_machine)
        execution_arn = (
            f"{arn_prefix(self, 'states')}:execution:"
            f'{{"Fn::Select":[6,{{"Fn::Split":[":",{{"Ref":"{sm_ref}"}}]}}]}}:*'
        )
        acknowledge(
            api.role or api,
            f"AwsSolutions-IAM5[Resource::{execution_arn}]",
            "StopExecution is scoped to executions of this one state machine; execution names "
            "are build ids chosen at run time.",
        )
        iam.Policy(
            self,
            "DispatchTaskResponse",
            roles=[dispatch.role] if dispatch.role else [],
            statements=[
                iam.PolicyStatement(actions=list(TASK_RESPONSE_ACTIONS), resources=[state_machine.state_machine_arn])
            ],
        )

    def _logical(self, construct: Construct) -> str:
        child = construct.node.default_child
        assert child is not None
        return str(Stack.of(self).resolve(child.logical_id))  # type: ignore[attr-defined]


_RETENTION_STEPS: tuple[tuple[int, logs.RetentionDays], ...] = (
    (1, logs.RetentionDays.ONE_DAY),
    (3, logs.RetentionDays.THREE_DAYS),
    (7, logs.RetentionDays.ONE_WEEK),
    (14, logs.RetentionDays.TWO_WEEKS),
    (30, logs.RetentionDays.ONE_MONTH),
    (60, logs.RetentionDays.TWO_MONTHS),
    (90, logs.RetentionDays.THREE_MONTHS),
    (180, logs.RetentionDays.SIX_MONTHS),
    (365, logs.RetentionDays.ONE_YEAR),
    (731, logs.RetentionDays.TWO_YEARS),
)


def log_retention(days: int) -> logs.RetentionDays:
    """The shortest CloudWatch retention step that keeps logs at least `days` days."""
    for step, retention in _RETENTION_STEPS:
        if step >= days:
            return retention
    return _RETENTION_STEPS[-1][1]


def _grant_table(
    grantee: iam.IGrantable,
    table: dynamodb.ITable,
    actions: tuple[str, ...],
    *,
    indexes: tuple[str, ...] = (),
) -> iam.Grant:
    """Grant `actions` on the table itself (and on named indexes only: never `index/*`)."""
    return iam.Grant.add_to_principal(
        grantee=grantee,
        actions=list(actions),
        resource_arns=[table.table_arn, *(f"{table.table_arn}/index/{name}" for name in indexes)],
    )


BEDROCK_INVOKE_ACTIONS = ("bedrock:InvokeModel", "bedrock:InvokeModelWithResponseStream")
_INFERENCE_PROFILE_GEOS = ("us", "eu", "apac", "jp", "au", "ca", "us-gov", "global")


def bedrock_resource_arns(model_id: str) -> tuple[list[str], list[str]]:
    """(ARNs to invoke directly, foundation-model ARNs reachable only through that profile).

    A plain model id is one foundation model in this region. A cross-region inference profile
    (`us.anthropic...`) is invoked by its profile ARN in this account and region, and routes to the
    foundation model in any of its destination regions: those are granted only when the request
    goes through this profile (`bedrock:InferenceProfileArn`).
    """
    stack_arn = "arn:${AWS::Partition}:bedrock:${AWS::Region}"
    geo, _, base = model_id.partition(".")
    if geo in _INFERENCE_PROFILE_GEOS and base:
        profile = f"{stack_arn}:${{AWS::AccountId}}:inference-profile/{model_id}"
        return [profile], [f"arn:${{AWS::Partition}}:bedrock:*::foundation-model/{base}"]
    return [f"{stack_arn}::foundation-model/{model_id}"], []


def grant_bedrock_invoke(fn: lambda_.Function, model_id: str) -> None:
    """InvokeModel and its streaming variant on the configured model only (no `*` model)."""
    direct, via_profile = bedrock_resource_arns(model_id)
    fn.add_to_role_policy(
        iam.PolicyStatement(actions=list(BEDROCK_INVOKE_ACTIONS), resources=[Fn.sub(a) for a in direct])
    )
    if via_profile:
        fn.add_to_role_policy(
            iam.PolicyStatement(
                actions=list(BEDROCK_INVOKE_ACTIONS),
                resources=[Fn.sub(a) for a in via_profile],
                conditions={"StringEquals": {"bedrock:InferenceProfileArn": Fn.sub(direct[0])}},
            )
        )
        for arn in via_profile:
            acknowledge(
                fn.role or fn,
                f"AwsSolutions-IAM5[Resource::{arn.replace('${', '<').replace('}', '>')}]",
                "A cross-region inference profile routes to the same foundation model in each of its "
                "destination regions; the grant names that one model and only holds for requests made "
                "through this stack's inference profile (bedrock:InferenceProfileArn condition).",
            )
