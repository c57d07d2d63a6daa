"""The local runtime: all of Stepwise in one process, on moto, with no AWS account.

moto plays DynamoDB (with the events stream), SQS (visibility timeouts, DLQ redrive), S3, Secrets
Manager and Step Functions, which executes the same ASL file CDK deploys; its Lambda tasks are
routed to the real handler functions. Threads play the Lambda service's event sources. The handlers
cannot tell this from AWS: they get the same events and a context with a real remaining time.

moto runs in this process (`backends="inline"`) or in a process of its own (`backends="process"`,
`local.aws_process`), which gives the runtime a second core.
"""

from __future__ import annotations

import importlib
import json
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from local import gc_policy, invocations
from local.context import LocalContext
from local.pollers import MAX_MESSAGE_BYTES, Handler, SqsPoller, StreamRelay, StreamSignal
from shared import constants as c
from shared import limits, resources
from shared.clock import SYSTEM_CLOCK, Clock
from shared.dal.aws import client, reset_clients
from shared.logic.services import reset_services, use_clock
from shared.settings import ConfigurationError, get_settings, missing_credentials, reset_settings

ASL_PATH = Path(__file__).resolve().parent.parent / "infra" / "statemachine.asl.json"
REGION = "us-east-1"
ACCOUNT = "123456789012"
PREFIX = "stepwise-local"
BACKENDS = ("inline", "process")  # where moto runs: in this process, or in one of its own
BACKENDS_ENV = "STEPWISE_LOCAL_BACKENDS"  # the choice when the caller makes none (default inline)

def function_context(name: str, timeout_s: float | None = None) -> LocalContext:
    """The context a function gets: its deployed time limit (unless given) and memory (one of the
    five functions'; another, such as the WebSocket API's, names its timeout and gets the default)."""
    if timeout_s is None:
        timeout_s = limits.function_timeout_s(name, get_settings().task_timeout_seconds)
    memory = limits.FUNCTION_MEMORY_MB.get(name, LocalContext.memory_limit_in_mb)
    return LocalContext(f"{PREFIX}-{name}", timeout_s, memory_limit_in_mb=memory)


def call_api(event: dict[str, Any], timeout_s: float | None = None) -> dict[str, Any]:
    """One API request as API Gateway makes it: the api handler runs as one invocation, abandoned at
    its function's time limit (nothing it does after that reaches AWS; it answers 504, as API
    Gateway does). So an API call that outlives its limit can never commit late, as on AWS."""
    if timeout_s is None:
        timeout_s = limits.function_timeout_s("api", get_settings().task_timeout_seconds)
    outcome = invocations.invoke(load_handler("api"), event, function_context("api", timeout_s), timeout_s)
    if outcome.timed_out:
        body = json.dumps({"message": "Endpoint request timed out"})
        return {"statusCode": 504, "headers": {"Content-Type": "application/json"}, "body": body}
    if outcome.error is not None:
        raise outcome.error
    result: dict[str, Any] = outcome.result
    return result


_ENV_DEFAULTS = {
    "AWS_ACCESS_KEY_ID": "local",
    "AWS_SECRET_ACCESS_KEY": "local",
    "AWS_SESSION_TOKEN": "local",
    "AWS_DEFAULT_REGION": REGION,
    "AWS_REGION": REGION,
    "AWS_ACCOUNT_ID_ENDPOINT_MODE": "disabled",
    "MOTO_ALLOW_NONEXISTENT_REGION": "true",
    "POWERTOOLS_TRACE_DISABLED": "true",
    "POWERTOOLS_METRICS_DISABLED": "true",
    "POWERTOOLS_LOG_LEVEL": "WARNING",
    "POWERTOOLS_SERVICE_NAME": "stepwise",
    "POWERTOOLS_DEV": "false",
}


def _apply_log_level() -> None:
    """The functions' log lines go to stderr at LOG_LEVEL (default WARNING), masked like on AWS;
    so do the lines of the libraries they use (masked by the same rules)."""
    import logging

    from shared.observability import MaskingFilter, logger

    level = (os.environ.get(c.LOG_LEVEL) or "WARNING").upper()
    try:
        logger.setLevel(level)
    except (ValueError, TypeError):
        raise ConfigurationError(f"{c.LOG_LEVEL}: expected DEBUG, INFO, WARNING or ERROR (got {level!r})") from None
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, MaskingFilter) for f in handler.filters):
            handler.addFilter(MaskingFilter())


def load_handler(name: str) -> Handler:
    module, _, attr = c.FUNCTION_HANDLERS[name].rpartition(".")
    return getattr(importlib.import_module(module), attr)  # type: ignore[no-any-return]


def _import_handlers() -> None:
    """Import every handler, and httpx (the webhook warm-up thread's one lazy import), at start in
    one thread: two threads importing one package at once can fail with a partially initialized
    module, and the pollers and the warm-up thread would otherwise import them side by side."""
    for name in c.FUNCTION_HANDLERS:
        load_handler(name)
    importlib.import_module("httpx")


@dataclass
class Resources:
    queues: dict[str, str] = field(default_factory=dict)  # name -> url
    queue_arns: dict[str, str] = field(default_factory=dict)
    functions: dict[str, str] = field(default_factory=dict)  # name -> arn
    state_machine_arn: str = ""
    events_stream_arn: str = ""
    webhook_secret_arn: str = ""


class LocalRuntime:
    """Start with `with LocalRuntime() as rt:`; `rt.invoke_api(...)` talks to the API handler."""

    def __init__(
        self,
        *,
        task_workers: int = 8,
        webhook_workers: int = 4,
        visibility_scale: float = limits.LOCAL_VISIBILITY_SCALE,
        env: dict[str, str] | None = None,
        aws_port: int | None = None,
        clock: Clock | None = None,
        switch_interval_s: float | None = 0.001,
        backends: str | None = None,
    ) -> None:
        backends = backends or os.environ.get(BACKENDS_ENV) or "inline"
        if backends not in BACKENDS:
            raise ConfigurationError(f"backends: expected one of {', '.join(BACKENDS)} (got {backends!r})")
        self.backends = backends
        self._process: Any = None  # the BackendsProcess, with backends="process"
        self.task_workers = task_workers
        self.webhook_workers = webhook_workers
        # The one local factor: the queues' visibility timeouts are the deployed ones times this.
        self.visibility_scale = visibility_scale
        # What each function is stopped at, as deployed (`shared.resources`); set when it starts.
        self.functions: dict[str, resources.FunctionLimits] = resources.functions(60)
        self.task_timeout_s = 60.0  # set at start, from the settings
        self.env = env or {}
        self.clock = clock or SYSTEM_CLOCK  # what the handlers' logic reads the time from
        self.resources = Resources()
        self.pollers: list[SqsPoller] = []
        self.relay: StreamRelay | None = None
        self._warming: threading.Thread | None = None
        self._mock: Any = None
        self._saved_env: dict[str, str | None] = {}
        self._original_invoke: Any = None
        self.aws_port = aws_port
        self._server: Any = None
        # How long a thread may hold the GIL while others wait (Python's default: 5 ms). This one
        # process runs CPU-bound handlers beside threads that wait on sockets (webhook POSTs, the
        # pollers, the API); a thread whose I/O finished waits up to this long per switch for the
        # GIL, and a delivery takes several switches. 1 ms halved the local webhook latency while a
        # build runs, at a few % of the build's CPU. None keeps the interpreter's setting.
        self.switch_interval_s = switch_interval_s
        self._saved_switch: float | None = None

    # --- lifecycle --------------------------------------------------------------------------------
    def __enter__(self) -> LocalRuntime:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        for key, value in {**_ENV_DEFAULTS, **self.env}.items():
            self._set_env(key, value)
        if self.switch_interval_s is not None:
            import sys

            self._saved_switch = sys.getswitchinterval()
            sys.setswitchinterval(self.switch_interval_s)
        reset_settings()
        use_clock(self.clock)
        try:  # fail fast, naming a bad variable, before anything starts
            settings = get_settings()
            missing = missing_credentials(settings)
            if missing:
                raise ConfigurationError(missing)
            _apply_log_level()
        except ConfigurationError:
            self.stop()
            raise
        if self.backends == "process":
            from local.aws_process import BackendsProcess

            self._process = BackendsProcess(self._invoke_function, aws_port=self.aws_port)
            try:
                self._process.spawn()
                _import_handlers()  # while the child imports moto
                self._process.connect()
            except BaseException:
                self.stop()
                raise
        else:
            from moto import mock_aws

            self._mock = mock_aws(
                config={"stepfunctions": {"execute_state_machine": True}, "lambda": {"use_docker": False}}
            )
            self._mock.start()
            from local import moto_fixes

            moto_fixes.install()
            _import_handlers()
        invocations.install()
        reset_clients()
        self._create_resources(settings.webhook_secret, settings.task_timeout_seconds)
        reset_settings()
        reset_services()
        get_settings()
        self._route_lambda_invocations()
        from local import event_waiter
        from shared.dal import events

        events.set_waiter(event_waiter.wait)  # long-polls wake on the stream's record, not by polling
        self._start_workers()
        if self.aws_port is not None and self._process is None:  # the backends process serves its own
            self._serve_aws()
        gc_policy.install()  # full collections walk only what is new: no half-second pauses

    @property
    def aws_endpoint(self) -> str | None:
        if self._process is not None:
            return self._process.aws_endpoint  # type: ignore[no-any-return]
        return f"http://127.0.0.1:{self.aws_port}" if self._server is not None else None

    @property
    def backends_pid(self) -> int | None:
        """The process moto runs in, when it is not this one."""
        return self._process.pid if self._process is not None else None

    def _serve_aws(self) -> None:
        """Expose the same moto backends over HTTP on 127.0.0.1, for tools in other processes
        (`stepwise dlq`, the AWS CLI with --endpoint-url)."""
        from moto.server import ThreadedMotoServer

        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.aws_port or 0, verbose=False)
        self._server.start()
        self.aws_port = self._server.get_host_and_port()[1]  # the port the OS gave, when 0 was asked

    def stop(self) -> None:
        gc_policy.uninstall()
        if self._server is not None:
            self._server.stop()
            self._server = None
        if self._warming is not None:  # done with the backends before they go
            self._warming.join(10)
            self._warming = None
        for p in self.pollers:
            p.stop()
        if self.relay:
            self.relay.stop()
        for p in self.pollers:
            p.join()
        if self.relay:
            self.relay.join()
        self._restore_lambda_invocations()
        from shared.dal import events

        events.set_waiter(None)
        if self._mock is not None:
            self._mock.stop()
            self._mock = None
        if self._process is not None:
            self._process.stop()
            self._process = None
        reset_clients()
        if self._saved_switch is not None:
            import sys

            sys.setswitchinterval(self._saved_switch)
            self._saved_switch = None
        for key, value in self._saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        reset_settings()
        use_clock(None)

    def _set_env(self, key: str, value: str) -> None:
        if key not in self._saved_env:
            self._saved_env[key] = os.environ.get(key)
        os.environ[key] = value

    # --- resources --------------------------------------------------------------------------------
    def _create_resources(self, webhook_secret: str | None, task_timeout_s: float) -> None:
        r = self.resources
        ddb = client("dynamodb")
        # The connections table too: the local WebSocket server keeps its subscriptions in memory,
        # but the functions run with the same tables as on AWS.
        for spec in (*resources.TABLES.values(), resources.CONNECTIONS):
            table = f"{PREFIX}-{spec.name}"
            keys = [*spec.keys, *(k for i in spec.indexes for k in (i.partition, i.sort) if k)]
            kwargs: dict[str, Any] = {
                "TableName": table,
                "BillingMode": "PAY_PER_REQUEST",
                "KeySchema": _key_schema(spec.partition, spec.sort),
                "AttributeDefinitions": [
                    {"AttributeName": k.name, "AttributeType": k.type} for k in dict.fromkeys(keys)
                ],
            }
            if spec.indexes:
                kwargs["GlobalSecondaryIndexes"] = [
                    {
                        "IndexName": i.name,
                        "KeySchema": _key_schema(i.partition, i.sort),
                        "Projection": {"ProjectionType": i.projection},
                    }
                    for i in spec.indexes
                ]
            if spec.stream:
                kwargs["StreamSpecification"] = {"StreamEnabled": True, "StreamViewType": spec.stream}
            desc = ddb.create_table(**kwargs)["TableDescription"]
            if spec.ttl:  # as on AWS: records expire RECORD_TTL_DAYS after they are written
                ddb.update_time_to_live(
                    TableName=table, TimeToLiveSpecification={"Enabled": True, "AttributeName": spec.ttl}
                )
            if spec.stream:
                r.events_stream_arn = desc["LatestStreamArn"]
            self._set_env(spec.env, table)

        bucket = f"{PREFIX}-files"
        client("s3").create_bucket(Bucket=bucket)
        client("s3").put_bucket_lifecycle_configuration(
            Bucket=bucket,
            LifecycleConfiguration={
                "Rules": [
                    {
                        "ID": "expire-build-files",
                        "Filter": {"Prefix": "builds/"},
                        "Status": "Enabled",
                        "Expiration": {"Days": get_settings().record_ttl_days},
                    }
                ]
            },
        )
        self._set_env(c.FILES_BUCKET, bucket)

        # As on AWS (shared.resources): the function timeouts, and the queues' visibility timeouts
        # derived from them (scaled by `visibility_scale` alone: limits.LOCAL_VISIBILITY_SCALE).
        self.functions = resources.functions(task_timeout_s)
        self.task_timeout_s = task_timeout_s
        for queue in resources.queues(webhook_max_attempts=get_settings().webhook_max_attempts).values():
            if queue.local:
                self._queue(queue, task_timeout_s)
        self._set_env(c.TASKS_QUEUE_URL, r.queues["tasks"])
        self._set_env(c.TASK_FINISHED_QUEUE_URL, r.queues["task-finished.fifo"])
        self._set_env(c.WEBHOOK_QUEUE_URL, r.queues["webhooks"])
        self._set_env(c.WEBHOOK_DLQ_URL, r.queues["webhooks-dlq"])

        from shared.signing import generate_secret

        secret = webhook_secret or generate_secret()
        r.webhook_secret_arn = client("secretsmanager").create_secret(
            Name=f"{PREFIX}/webhook-secret", SecretString=secret
        )["ARN"]
        self._set_env(c.WEBHOOK_SECRET_ARN, r.webhook_secret_arn)
        self._set_env(c.WEBHOOK_SECRET, secret)
        self.webhook_secret = secret

        role = client("iam").create_role(
            RoleName=f"{PREFIX}-role",
            AssumeRolePolicyDocument=json.dumps(
                {
                    "Version": "2012-10-17",
                    "Statement": [
                        {
                            "Effect": "Allow",
                            "Action": "sts:AssumeRole",
                            "Principal": {"Service": "lambda.amazonaws.com"},
                        }
                    ],
                }
            ),
        )["Role"]["Arn"]
        lam = client("lambda")
        for name, handler in c.FUNCTION_HANDLERS.items():
            r.functions[name] = lam.create_function(
                FunctionName=f"{PREFIX}-{name}",
                Runtime="python3.12",
                Role=role,
                Handler=handler,
                Code={"ZipFile": b"local"},
                Timeout=self.functions[name].timeout_s,
                MemorySize=self.functions[name].memory_mb,
            )["FunctionArn"]

        definition = ASL_PATH.read_text()
        for key, value in {
            c.ASL_PLAN_FUNCTION: r.functions["plan"],
            c.ASL_DISPATCH_FUNCTION: r.functions["dispatch"],
        }.items():
            definition = definition.replace("${" + key + "}", value)
        r.state_machine_arn = client("stepfunctions").create_state_machine(
            name=f"{PREFIX}-build", definition=definition, roleArn=role, type="STANDARD"
        )["stateMachineArn"]
        self._set_env(c.STATE_MACHINE_ARN, r.state_machine_arn)

    def visibility_s(self, queue: str) -> int:
        """The visibility timeout this runtime gives `queue` (tasks, tasks-dlq, task-finished, webhooks)."""
        return resources.queue_visibility_s(queue, self.task_timeout_s, self.visibility_scale)

    def _queue(self, spec: resources.QueueSpec, task_timeout_s: float) -> None:
        sqs = client("sqs")
        name = spec.queue_name
        attributes = {"MaximumMessageSize": str(MAX_MESSAGE_BYTES)}  # the outbox's Pipes limit: oversize fails here
        if spec.fifo:
            attributes["FifoQueue"] = "true"
        visibility = spec.visibility_s(task_timeout_s, self.visibility_scale)
        if visibility is not None:
            attributes["VisibilityTimeout"] = str(visibility)
        if spec.dlq:
            dlq_arn = self.resources.queue_arns[f"{spec.dlq}.fifo" if spec.fifo else spec.dlq]
            attributes["RedrivePolicy"] = json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": spec.max_receives})
        url = sqs.create_queue(QueueName=f"{PREFIX}-{name}", Attributes=attributes)["QueueUrl"]
        self.resources.queues[name] = url
        self.resources.queue_arns[name] = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])[
            "Attributes"
        ]["QueueArn"]

    # --- Lambda invocations from Step Functions --------------------------------------------------
    def _invoke_function(self, short_name: str, body: bytes) -> tuple[bytes, str | None]:
        """One Lambda invocation of the function named `short_name` (as deployed: PREFIX-name), as
        the Lambda service answers it: the JSON payload, and "Unhandled" when the function failed."""
        name = self._function_names[short_name]
        event = json.loads(body) if body else {}
        timeout_s = self.functions[name].timeout_s
        outcome = invocations.invoke(load_handler(name), event, function_context(name, timeout_s), timeout_s)
        if outcome.timed_out:
            error = {"errorType": "Sandbox.Timedout", "errorMessage": f"Task timed out after {timeout_s} seconds"}
            return json.dumps(error).encode(), "Unhandled"
        if outcome.error is not None:
            exc = outcome.error
            return json.dumps({"errorType": type(exc).__name__, "errorMessage": str(exc)}).encode(), "Unhandled"
        return json.dumps(outcome.result).encode(), None

    @property
    def _function_names(self) -> dict[str, str]:
        return {arn.rsplit(":", 1)[-1]: name for name, arn in self.resources.functions.items()}

    def _route_lambda_invocations(self) -> None:
        if self._process is not None:  # the backends process sends them here (`_invoke_function`)
            return
        from moto.awslambda_simple.models import LambdaSimpleBackend

        ours = self._function_names
        original = LambdaSimpleBackend.invoke
        self._original_invoke = original

        def invoke(
            backend: Any, function_name: str, qualifier: str | None, body: Any, headers: Any, response_headers: Any
        ) -> bytes:
            short = function_name.split(":")[6] if function_name.startswith("arn:") else function_name
            if short not in ours:
                return original(backend, function_name, qualifier, body, headers, response_headers)  # type: ignore[return-value]
            payload, function_error = self._invoke_function(short, body.encode() if isinstance(body, str) else body)
            if function_error:
                response_headers["x-amz-function-error"] = function_error
            return payload

        LambdaSimpleBackend.invoke = invoke  # type: ignore[method-assign, assignment]

    def _restore_lambda_invocations(self) -> None:
        if self._original_invoke is not None:
            from moto.awslambda_simple.models import LambdaSimpleBackend

            LambdaSimpleBackend.invoke = self._original_invoke  # type: ignore[method-assign]
            self._original_invoke = None

    # --- event sources ----------------------------------------------------------------------------
    def _start_workers(self) -> None:
        q, arns = self.resources.queues, self.resources.queue_arns

        def fn(name: str) -> Callable[[], Handler]:
            return lambda: load_handler(name)

        described = resources.queues(webhook_max_attempts=get_settings().webhook_max_attempts)

        def poller(queue: str, workers: int, batch_size: int | None = None) -> SqsPoller:
            """An event source mapping: `queue` feeds its consumer with batches of its batch size."""
            spec = described[queue]
            function = spec.consumer or ""
            return SqsPoller(
                spec.queue_name,
                q[spec.queue_name],
                arns[spec.queue_name],
                fn(function),
                function_name=f"{PREFIX}-{function}",
                timeout_s=self.functions[function].timeout_s,
                memory_mb=self.functions[function].memory_mb,
                batch_size=batch_size or spec.batch_size or 1,
                workers=workers,
            )

        self.pollers = [
            poller("tasks", workers=self.task_workers),
            poller("task-finished", workers=2),
            poller("tasks-dlq", workers=1),
            # One event per invocation: a batch's deliveries go one after another, so the fifth of a
            # batch waited for the four before it (p50 ~370 ms against ~170 ms one by one, 30-task build).
            poller("webhooks", workers=self.webhook_workers, batch_size=1),
        ]
        for p in self.pollers:
            p.start()
        self._warming = threading.Thread(target=_warm_webhooks, name="webhook-warm", daemon=True)
        self._warming.start()
        from local.live import feed

        signal = StreamSignal() if self._process is None else StreamSignal(self._process.wait_stream, self._process.wake_stream)
        self.relay = StreamRelay(
            self.resources.events_stream_arn, q["webhooks"], on_records=feed.publish_records, signal=signal
        )
        self.relay.start()

    # --- the API, as API Gateway would call it --------------------------------------------------
    _api_lock = threading.Lock()

    def invoke_api(
        self,
        method: str,
        path: str,
        *,
        user: str | None,
        body: Any = None,
        query: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
        raw: bool = False,
    ) -> tuple[int, Any]:
        from local.apigw import proxy_event

        payload = body if isinstance(body, str) or body is None else json.dumps(body)
        event = proxy_event(method, path, user=user, body=payload, query=query, headers=headers)
        result = call_api(event, self.functions["api"].timeout_s)
        text = result.get("body") or ""
        if raw:
            return int(result["statusCode"]), text
        try:
            return int(result["statusCode"]), json.loads(text) if text else None
        except ValueError:
            return int(result["statusCode"]), text


def _key_schema(partition: resources.Key, sort: resources.Key | None) -> list[dict[str, str]]:
    hash_key = {"AttributeName": partition.name, "KeyType": "HASH"}
    return [hash_key, {"AttributeName": sort.name, "KeyType": "RANGE"}] if sort else [hash_key]


def _warm_webhooks() -> None:
    """The webhook consumer's first-delivery work, done while the runtime is idle: a build's first
    events would otherwise queue behind it (~0.7 s while the build runs), and a fast build's later
    events behind those."""
    try:  # the handlers were imported by start(): two threads importing one package can fail
        from shared.logic.webhooks import warm

        warm()
    except Exception:  # no secret yet, or none configured: the first delivery does it (and says why)
        from shared.observability import logger

        logger.debug("webhook consumer not warmed", exc_info=True)
