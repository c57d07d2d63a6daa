"""The crash harness's machinery: the real handlers on moto, fed by a driver that plays SQS, Lambda
and Step Functions, with faults injected at the handlers' I/O boundaries.

- `Faults` fires a schedule of faults at boto3 calls made inside an invocation: before or after a
  DynamoDB commit, an SQS send, an S3 put, a Step Functions callback. A *crash* kills the invocation
  there (`local.invocations`: that call, and every later one from any of its threads, never leaves
  the process), before the call or after it committed; a *lost response* makes the call commit
  and then sends it again, as the SDK does when a response is lost; an *error* fails the call as
  a service error would after the SDK's own retries; an *expiry* makes the message being handled
  visible again while its work runs, so a second consumer (another process: its own Services)
  takes it there and then; a *time limit* stops the invocation there as Lambda does at its
  function's timeout: that much time passes (the fake clock), and the caller sees Sandbox.Timedout.
- An injected *conflict* or *throttle* is an error DynamoDB sends and moto never does (a
  transaction cancelled by a TransactionConflict or a ThrottlingError; ProvisionedThroughputExceeded
  or ThrottlingException), on the build item or an event write: it is put on the wire (botocore's
  `before-send`, answered in moto's place, which never sees the request) for `times` sends in a row
  of that operation, so the SDK's own retries see it first (their backoff runs on the fake clock),
  then the caller's own retries.
- A `Call` is an API request racing an invocation: at the nth call of an operation inside that
  invocation (a handoff's commit, Finalize's, an approval's), a user's cancel, retry, skip or second
  approval runs in another thread, as another Lambda would, before the invocation goes on.
- `Driver` holds the messages in flight with their receive counts and visibility, delivers them in
  a random order (again, sometimes, after they were deleted), moves a message past its
  maxReceiveCount to its DLQ (the tasks DLQ is consumed by the dispatcher, as deployed), and plays
  the state machine from infra/statemachine.asl.json: Execute with its task token and its Retry
  rules, the token's answer, the state's timeout, Finalize with its retries, and each further run a
  retry or skip after the end starts (StartExecution is answered by the harness). Time is a fake
  clock the driver moves forward when every message waits.
- `check_invariants` states what must hold however the faults fell.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import random
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import botocore.endpoint
from botocore.awsrequest import AWSResponse
from botocore.exceptions import ClientError
from moto.core.botocore_stubber import BotocoreStubber, MockRawResponse

from local import invocations
from local.runtime import ASL_PATH, load_handler
from shared import limits, resources
from shared.clock import Clock
from shared.dal.aws import add_client_hook, client
from shared.logic.attempts.runner import run_task
from shared.logic.services import Services, services, use_clock
from shared.models.build import TERMINAL_BUILD_STATUSES
from shared.models.messages import TaskMessage
from shared.models.records import BuildRecord, TaskRecord
from shared.settings import get_settings
from tests.helpers import drain_queue, sqs_event, sqs_record
from tests.integration.quiet import QuietRuntime, lambda_context

# The I/O boundaries a fault can hit: (service, operation).
BOUNDARIES: tuple[tuple[str, str], ...] = (
    ("dynamodb", "TransactWriteItems"),
    ("dynamodb", "PutItem"),
    ("dynamodb", "UpdateItem"),
    ("dynamodb", "GetItem"),
    ("dynamodb", "BatchGetItem"),
    ("dynamodb", "Query"),
    ("sqs", "SendMessageBatch"),
    ("sqs", "ChangeMessageVisibility"),  # the lease's renewal
    ("s3", "PutObject"),
    ("s3", "GetObject"),
    ("sfn", "SendTaskSuccess"),
    ("sfn", "SendTaskFailure"),
)
KINDS = ("crash_before", "crash_after", "lost_response", "error", "expiry", "time_limit")
# Errors DynamoDB answers that moto never does, where they land in production: the build item (every
# step's commit condition, the hottest item) and the event log (a build's events share a partition).
# (An event alone, PutItem, is written while planning, which the harness skips.)
SERVICE_ERRORS = ("conflict", "throttle", "throttling")
CONTENDED: tuple[tuple[str, str], ...] = (  # (operation, table)
    ("TransactWriteItems", "builds"),
    ("TransactWriteItems", "events"),
    ("UpdateItem", "builds"),
    ("GetItem", "builds"),
)


@dataclass(frozen=True)
class Fault:
    service: str
    operation: str
    nth: int  # fires at the nth call of that operation made inside an invocation (1-based)
    kind: str
    table: str | None = None  # count only the calls that touch this table (builds, events, tasks)
    times: int = 1  # a service error: how many sends in a row get it (the SDK retries the rest)


@dataclass(frozen=True)
class Call:
    """An API request (cancel, retry, skip, approve) racing an invocation: it runs at the nth call of
    `operation` inside the invocation labelled `during` (task, dispatch, execute, finalize, approve,
    or `end`: once the run ended, before the next one)."""

    action: str
    during: str
    service: str = "dynamodb"
    operation: str = "TransactWriteItems"
    nth: int = 1
    task: str | None = None  # the task a retry or skip names (else one it can act on, at random)
    fault: Fault | None = None  # a fault inside the API call itself, at its own nth call of that operation


@dataclass
class Delivery:
    """What the invocation being run was handed: its queue and message (for an expiry)."""

    queue: str
    body: dict[str, Any]


_delivery: contextvars.ContextVar[Delivery | None] = contextvars.ContextVar("harness_delivery", default=None)
_nested: contextvars.ContextVar[bool] = contextvars.ContextVar("harness_nested", default=False)
_call_fault: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar("harness_call_fault", default=None)
_replaying = threading.local()
_wire = threading.local()  # the service error the next sends of this thread get, instead of moto's answer
_DDB_ERROR_TYPE = "com.amazonaws.dynamodb.v20120810#"


def _tables(params: dict[str, Any]) -> list[str]:
    """The short names (builds, events, tasks ...) of the tables a DynamoDB call touches, in order."""
    names: list[str] = []
    if "TableName" in params:
        names.append(str(params["TableName"]))
    for item in params.get("TransactItems") or []:
        for body in item.values():
            names.append(str(body.get("TableName", "")))
    return [n.rsplit("-", 1)[-1] for n in names]


def _wire_error(kind: str, operation: str, tables: list[str], table: str | None) -> tuple[int, dict[str, Any]]:
    """(HTTP status, JSON body) of the error DynamoDB answers for `kind`."""
    if kind == "throttling":
        return 400, {"__type": _DDB_ERROR_TYPE + "ThrottlingException", "message": "Rate of requests exceeds the allowed throughput."}
    if operation == "TransactWriteItems":  # a transaction reports conflicts and throttles per item
        code = "TransactionConflict" if kind == "conflict" else "ThrottlingError"
        hit = tables.index(table) if table in tables else 0
        reasons = [{"Code": code, "Message": "injected"} if i == hit else {"Code": "None"} for i in range(len(tables))]
        listed = ", ".join(r["Code"] for r in reasons)
        return 400, {
            "__type": _DDB_ERROR_TYPE + "TransactionCanceledException",
            "Message": f"Transaction cancelled, please refer cancellation reasons for specific reasons [{listed}]",
            "CancellationReasons": reasons,
        }
    return 400, {
        "__type": _DDB_ERROR_TYPE + "ProvisionedThroughputExceededException",
        "message": "The level of configured provisioned throughput for the table was exceeded.",
    }


class _SdkClock:
    """botocore's `time` while the harness runs: a retry's backoff moves the fake clock instead of
    sleeping (the SDK's retry decisions are its own; only the wait is simulated)."""

    def __init__(self, real: Any, faults: Faults) -> None:
        self._real = real
        self._faults = faults

    def sleep(self, seconds: float) -> None:
        self._faults.backoff_s += float(seconds)
        _Clock.offset_s += float(seconds)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


class TimeLimit(invocations.InvocationKilled):
    """The invocation ran past its function's time limit (Step Functions sees Sandbox.Timedout)."""


class Faults:
    """A schedule of faults, fired at boto3 calls made inside an invocation (installed once per
    process; inactive outside `active`)."""

    def __init__(self) -> None:
        self.schedule: list[Fault] = []
        self.calls: dict[tuple[Any, ...], int] = {}
        self.fired: list[Fault] = []
        self.answers: list[tuple[str, str, dict[str, Any]]] = []  # Step Functions callbacks that left
        self.visibility: dict[str, float] = {}  # receipt handle -> the last visibility asked
        self.on_expiry: Any = None  # Driver callback: run the current message in a second consumer
        self.on_call: Any = None  # Driver callback: run an API request racing the current invocation
        self.races: list[Call] = []
        self.raced: list[Call] = []
        self.started: list[tuple[str, dict[str, Any]]] = []  # executions the API started (name, input)
        self.stopped: list[str] = []
        self.served_errors = 0  # sends answered with an injected service error
        self.backoff_s = 0.0  # what the SDK's retries waited, on the fake clock
        self.hold = False  # the schedule's faults wait (a Call still races)
        self._lock = threading.Lock()
        self.enabled = False
        add_client_hook(self._install)

    @contextlib.contextmanager
    def active(self, schedule: list[Fault], races: list[Call] | None = None) -> Iterator[Faults]:
        self.schedule, self.calls, self.fired, self.answers, self.visibility = list(schedule), {}, [], [], {}
        self.races, self.raced, self.started, self.stopped = list(races or []), [], [], []
        self.served_errors, self.backoff_s, self.hold = 0, 0.0, False
        _wire.pending = None
        self.enabled = True
        real_time, real_stub = botocore.endpoint.time, BotocoreStubber.__call__
        botocore.endpoint.time = _SdkClock(real_time, self)  # type: ignore[assignment]

        def stub(stubber: Any, event_name: str, request: Any, **kwargs: Any) -> Any:
            if getattr(_wire, "served", False):  # the harness answered this send: moto never sees it
                _wire.served = False
                return None
            return real_stub(stubber, event_name, request, **kwargs)

        BotocoreStubber.__call__ = stub  # type: ignore[method-assign, assignment]
        try:
            yield self
        finally:
            self.enabled = False
            botocore.endpoint.time = real_time  # type: ignore[assignment]
            BotocoreStubber.__call__ = real_stub  # type: ignore[method-assign]

    # --- botocore hooks ----------------------------------------------------------------------------
    def _install(self, c: Any) -> None:
        service = c.meta.service_model.service_name
        service = "sfn" if service == "stepfunctions" else service
        c.meta.events.register("before-parameter-build", lambda **kw: self._stash(**kw))
        c.meta.events.register("before-call", lambda **kw: self._before(c, service, **kw))
        c.meta.events.register("after-call", lambda **kw: self._after(c, service, **kw))
        c.meta.events.register_first("before-send", lambda **kw: self._send(**kw))

    def _send(self, request: Any, event_name: str, **_: Any) -> Any:
        """An injected service error, answered in moto's place for this send (the next `times` sends
        of that operation from this thread: the SDK's retries, then the caller's own)."""
        pending = getattr(_wire, "pending", None)
        if not self.enabled or not pending or pending[0] <= 0 or not event_name.endswith("." + pending[2]):
            return None
        pending[0] -= 1
        status, body = pending[1]
        raw = json.dumps(body).encode()
        headers = {"x-amzn-RequestId": uuid.uuid4().hex, "Content-Type": "application/x-amz-json-1.0"}
        headers["Content-Length"] = str(len(raw))
        with self._lock:
            self.served_errors += 1
        _wire.served = True
        return AWSResponse(request.url, status, headers, MockRawResponse(raw))

    @staticmethod
    def _stash(params: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
        context["harness_params"] = dict(params)

    def _before(self, c: Any, service: str, model: Any, context: dict[str, Any], **_: Any) -> Any:
        if not self.enabled or getattr(_replaying, "on", False):
            return
        op = model.name
        params = context.get("harness_params") or {}
        if op == "ChangeMessageVisibility":
            self.visibility[str(params.get("ReceiptHandle"))] = float(params.get("VisibilityTimeout", 0))
        # The driver plays Step Functions: it runs what starts (unless a fault stops the call below).
        plays = service == "sfn" and op in ("StartExecution", "StopExecution")
        invocation = invocations.current.get()
        own = _call_fault.get()  # an API call racing the engine, with a fault of its own
        if invocation is None or (_nested.get() and own is None):
            return self._execution(op, params) if plays else None
        tables = _tables(params) if service == "dynamodb" else []
        if own is not None:  # its own fault first; a top-level request still starts the Calls that race it
            fault = self._own_fault(own, service, op, tables)
            if not _nested.get():
                fault = self._scheduled(invocation, service, op, tables) or fault
        else:
            fault = self._scheduled(invocation, service, op, tables)
        if plays and (fault is None or fault.kind in ("lost_response", "expiry", "crash_after")):
            if fault is not None and fault.kind == "crash_after":
                context["harness_fault"] = fault.kind  # started, then the invocation dies (after-call)
            return self._execution(op, params)
        if fault is None:
            return None
        if fault.kind in SERVICE_ERRORS:
            _wire.pending = [fault.times, _wire_error(fault.kind, op, tables, fault.table), op]
            return None
        context["harness_fault"] = fault.kind
        if fault.kind == "time_limit":  # stuck here until Lambda stopped it
            function = next((f for f in ("task", "api", "plan") if invocation.name.startswith(f)), "dispatch")
            _Clock.offset_s += limits.function_timeout_s(function, get_settings().task_timeout_seconds)
            invocation.kill()
            raise TimeLimit(f"{invocation.name} ran past its time limit at {op}")
        if fault.kind == "crash_before":
            invocation.kill()
            raise invocations.InvocationKilled(f"crashed before {op}")
        if fault.kind == "error":
            raise ClientError({"Error": {"Code": "ServiceUnavailable", "Message": "injected"}}, op)
        if fault.kind == "expiry" and self.on_expiry is not None:
            delivery = _delivery.get()
            if delivery is not None and delivery.queue == "tasks":
                self.on_expiry(delivery)
        return None

    def _own_fault(self, own: dict[str, Any], service: str, op: str, tables: list[str]) -> Fault | None:
        """The fault an API call carries (`Call.fault`), at its own nth call of the operation."""
        fault: Fault = own["fault"]
        if own["fired"] or (fault.service, fault.operation) != (service, op):
            return None
        if fault.table is not None and fault.table not in tables:
            return None
        own["n"] += 1
        if own["n"] != fault.nth:
            return None
        own["fired"] = True
        with self._lock:
            self.fired.append(fault)
        return fault

    def _scheduled(self, invocation: invocations.Invocation, service: str, op: str, tables: list[str]) -> Fault | None:
        """The schedule's fault for this call (and an API call racing it, started here), if any."""
        with self._lock:
            n = self.calls[(service, op, None)] = self.calls.get((service, op, None), 0) + 1
            counts: dict[str | None, int] = {None: n}
            for table in set(tables):
                counts[table] = self.calls[(service, op, table)] = self.calls.get((service, op, table), 0) + 1
            key = (invocation.name, service, op)
            race_n = self.calls[key] = self.calls.get(key, 0) + 1
            race = next(
                (r for r in self.races if (r.during, r.service, r.operation, r.nth) == (*key, race_n)), None
            )
            if race is not None:
                self.races.remove(race)
                self.raced.append(race)
            fault = None
            if not self.hold:
                fault = next(
                    (
                        f
                        for f in self.schedule
                        if (f.service, f.operation) == (service, op) and counts.get(f.table) == f.nth
                    ),
                    None,
                )
            if fault is not None:
                self.schedule.remove(fault)
                self.fired.append(fault)
        if race is not None and self.on_call is not None:
            self.on_call(race)
        return fault

    def _execution(self, op: str, params: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        """StartExecution / StopExecution, answered for the driver (which then runs what started)."""
        with self._lock:
            if op == "StartExecution":
                self.started.append((str(params["name"]), json.loads(params.get("input") or "{}")))
            else:
                self.stopped.append(str(params.get("executionArn")))
        arn = f"arn:aws:states:us-east-1:123456789012:execution:harness:{params.get('name', '')}"
        return _Answered(), ({"executionArn": arn, "startDate": 0} if op == "StartExecution" else {"stopDate": 0})

    def _after(self, c: Any, service: str, model: Any, context: dict[str, Any], http_response: Any, **_: Any) -> None:
        if not self.enabled or getattr(_replaying, "on", False):
            return
        params = context.get("harness_params") or {}
        if service == "sfn" and model.name in ("SendTaskSuccess", "SendTaskFailure"):
            self.answers.append((model.name, str(params.get("taskToken")), params))
        kind = context.get("harness_fault")
        if kind == "crash_after":
            invocation = invocations.current.get()
            if invocation is not None:
                invocation.kill()
            raise invocations.InvocationKilled(f"crashed after {model.name}")
        if kind == "lost_response":  # the SDK sends it again; its answer is the one the caller sees
            _replaying.on = True
            try:
                getattr(c, _snake(model.name))(**params)
            finally:
                _replaying.on = False


class _Answered:
    """The HTTP side of a call the harness answered itself."""

    status_code = 200
    headers: dict[str, str] = {}


def _snake(name: str) -> str:
    return "".join(f"_{ch.lower()}" if ch.isupper() else ch for ch in name).lstrip("_")


# --- the state machine's rules, read from the one ASL file -----------------------------------------
def _retried(state: str) -> tuple[set[str], int]:
    asl = json.loads(Path(ASL_PATH).read_text())
    names: set[str] = set()
    attempts = 0
    for rule in asl["States"][state].get("Retry", []):
        names |= set(rule["ErrorEquals"])
        attempts = max(attempts, int(rule.get("MaxAttempts", 3)))
    return names, attempts


def _matches(names: set[str], error: str) -> bool:
    return error in names or "States.ALL" in names or ("States.TaskFailed" in names and error != "States.Timeout")


# --- the driver ------------------------------------------------------------------------------------
@dataclass
class Message:
    queue: str  # tasks | finished
    body: dict[str, Any]
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    receives: int = 0
    visible_at: float = 0.0


@dataclass
class Run:
    """What happened to one build under the harness."""

    build_id: str
    deliveries: int = 0
    dead_lettered: list[dict[str, Any]] = field(default_factory=list)  # tasks DLQ
    lost: list[dict[str, Any]] = field(default_factory=list)  # task-finished DLQ (nothing consumes it)
    execute_error: str | None = None
    timed_out: bool = False
    final: dict[str, Any] | None = None
    expiries: int = 0
    cancelled: bool = False  # a cancel through the API was accepted (202)
    runs: int = 1  # Execute + Finalize played: a retry or skip after the end starts another
    answers: list[tuple[str, str | None, int]] = field(default_factory=list)  # (action, task, HTTP status) of API calls
    approved: list[str] | None = None  # the task ids of the plan an approval stored
    plans: int = 0  # Plan steps played (one per execution an API call started)
    superseded: list[str] = field(default_factory=list)  # executions whose run was never committed


class Driver:
    """Plays SQS, the Lambda service and Step Functions for one build at a time."""

    def __init__(self, quiet: QuietRuntime, faults: Faults, rnd: random.Random, *, duplicate_p: float = 0.2) -> None:
        self.quiet = quiet
        self.faults = faults
        self.rnd = rnd
        self.duplicate_p = duplicate_p
        self.inbox: list[Message] = []
        settings = get_settings()
        self.lease_s = float(limits.task_lease_s(settings.task_timeout_seconds))
        self.recovery_bound_s = limits.crash_recovery_bound_s(settings.task_timeout_seconds)
        self.task_visibility_s = float(resources.queue_visibility_s("tasks", settings.task_timeout_seconds))
        self.finished_visibility_s = float(resources.queue_visibility_s("task-finished", settings.task_timeout_seconds))
        faults.on_expiry = self._expire
        faults.on_call = self._race
        self._run: Run | None = None
        self._racing: list[threading.Thread] = []
        self._race_invocations: list[invocations.Invocation] = []
        self.edits: dict[str, list[dict[str, Any]]] = {}  # approve:<name> -> the task list it sends

    # --- queues ------------------------------------------------------------------------------------
    def _collect(self) -> None:
        sqs = client("sqs")
        for body in drain_queue(sqs, self.quiet.resources.queues["tasks"]):
            self.inbox.append(Message("tasks", body, visible_at=self.clock))
        for body in drain_queue(sqs, self.quiet.resources.queues["task-finished.fifo"]):
            self.inbox.append(Message("finished", body, visible_at=self.clock))

    def _record(self, m: Message) -> dict[str, Any]:
        queue = "tasks" if m.queue == "tasks" else "task-finished.fifo"
        arn = self.quiet.resources.queue_arns[queue]
        group = m.body.get("buildId") if m.queue == "finished" else None
        return sqs_record(m.body, arn, receive_count=m.receives, group_id=group, message_id=m.id) | {
            "receiptHandle": f"rh-{m.id}-{m.receives}"
        }

    def _invoke(
        self, function: str, event: dict[str, Any], delivery: Delivery | None, *, label: str | None = None
    ) -> tuple[Any, BaseException | None]:
        """One invocation of `function`, its calls marked as its own (a fault may kill it); `label`
        names it for a racing Call (task, dispatch, execute, finalize, approve)."""
        invocation = invocations.Invocation(label or function)
        outcome: dict[str, Any] = {}

        def run() -> None:
            invocations.current.set(invocation)
            _delivery.set(delivery)
            try:
                outcome["result"] = load_handler(function)(event, lambda_context(function))
            except BaseException as exc:
                outcome["error"] = exc

        contextvars.Context().run(run)
        _wire.pending = None  # an injected error still owed dies with its invocation
        self._join_races(0.3)
        return outcome.get("result"), outcome.get("error")

    # --- API calls racing an invocation --------------------------------------------------------------
    def _race(self, call: Call) -> None:
        """Start `call` in another thread (another Lambda) and give it a moment to get ahead: it may
        finish, or wait on what the invocation it races holds; either way the invocation goes on."""
        thread = threading.Thread(target=contextvars.Context().run, args=(self._api, call), daemon=True)
        thread.start()
        thread.join(0.25)
        self._racing.append(thread)

    def _join_races(self, wait_s: float = 30.0) -> None:
        """Wait for the API calls still racing (briefly, after an invocation: one that waits for a
        step the driver has yet to deliver goes on beside the next deliveries)."""
        for thread in list(self._racing):
            thread.join(wait_s)
            if not thread.is_alive():
                self._racing.remove(thread)

    def _api(self, call: Call) -> None:
        from local.apigw import proxy_event

        run = self._run
        assert run is not None
        invocation = invocations.Invocation(f"api-{call.action}")
        self._race_invocations.append(invocation)
        invocations.current.set(invocation)
        _nested.set(True)
        build_id = run.build_id
        owner = services().builds.require(build_id).ownerId
        task_id: str | None = None
        if call.action == "cancel":
            method, path, body = "POST", f"/builds/{build_id}/cancel", None
        elif call.action.startswith("approve"):
            method, path = "POST", f"/builds/{build_id}/approval"
            body = json.dumps({"approved": True, "tasks": self.edits[call.action]})
        else:  # retry | skip: a task it can act on, if one is there
            allowed = ("failed", "timeout") if call.action == "skip" else ("failed", "timeout", "skipped", "cancelled")
            items = services().tasks.list(build_id)
            able = [t.taskId for t in items if t.status in allowed] or [t.taskId for t in items]
            task_id = call.task or (able[self.rnd.randrange(len(able))] if able else "none")
            method, path, body = "POST", f"/builds/{build_id}/tasks/{task_id}/{call.action}", None
        own = _call_fault.set({"fault": call.fault, "n": 0, "fired": False} if call.fault else None)
        try:
            result = load_handler("api")(proxy_event(method, path, user=owner, body=body), lambda_context("api"))
            status = int(result.get("statusCode", 0))
        except BaseException:
            status = 0
        finally:
            _call_fault.reset(own)
            invocations.current.set(None)  # what follows is the harness's own reading
        run.answers.append((call.action, task_id, status))
        if call.action == "cancel" and status == 202:
            run.cancelled = True
        elif call.action == "cancel" and status == 0:  # died part way: did its commit land?
            run.cancelled = run.cancelled or services().builds.require(build_id).status == "cancelled"

    def deliver(self, m: Message, run: Run) -> None:
        m.receives += 1
        run.deliveries += 1
        limit = limits.TASKS_DLQ_MAX_RECEIVES if m.queue == "tasks" else limits.TASK_FINISHED_DLQ_MAX_RECEIVES
        if m.receives > limit:  # SQS moves it to the DLQ instead of delivering it
            if m.queue == "tasks":  # consumed by the dispatcher, as deployed
                run.dead_lettered.append(m.body)
                self.inbox.append(Message("dlq", m.body, visible_at=self.clock))
            else:
                run.lost.append(m.body)
            return
        record = self._record(m)
        function = "task" if m.queue == "tasks" else "dispatch"
        result, error = self._invoke(function, sqs_event([record]), Delivery(m.queue, m.body), label=function)
        failed = error is not None or bool((result or {}).get("batchItemFailures"))
        if failed:
            asked = self.faults.visibility.get(record["receiptHandle"])
            if isinstance(error, invocations.InvocationKilled) or asked is None:
                wait = self.lease_s if m.queue == "tasks" else self.finished_visibility_s
            else:
                wait = asked
            m.visible_at = self.clock + wait
            self.inbox.append(m)
        elif self.rnd.random() < self.duplicate_p:  # at least once: the same message again, later
            self.inbox.append(Message(m.queue, m.body, receives=m.receives, visible_at=self.clock + self.rnd.random()))

    def _deliver_dead(self, m: Message, run: Run) -> None:
        arn = self.quiet.resources.queue_arns["tasks-dlq"]
        run.deliveries += 1
        result, error = self._invoke("dispatch", sqs_event([sqs_record(m.body, arn, message_id=m.id)]), None)
        if error is not None or (result or {}).get("batchItemFailures"):  # it comes back
            m.visible_at = self.clock + self.finished_visibility_s
            self.inbox.append(m)

    def _expire(self, delivery: Delivery) -> None:
        """The message's visibility ran out while its work runs: a second consumer (another
        process: its own Services) takes it now; this one goes on after."""
        self._expiries += 1
        msg = TaskMessage.model_validate(delivery.body)
        other = Services(get_settings())

        def second() -> None:
            invocations.current.set(invocations.Invocation("task-second"))
            _nested.set(True)
            with contextlib.suppress(Exception):  # whatever it raises, its message stays queued
                run_task(msg, lambda: 600_000, other)

        thread = threading.Thread(target=contextvars.Context().run, args=(second,), daemon=True)
        thread.start()
        thread.join(60)

    _expiries = 0

    # --- the state machine -------------------------------------------------------------------------
    def _execute(
        self, build_id: str, run: Run, token_no: int, *, action: str = "execute", state: str = "Execute"
    ) -> tuple[str | None, int]:
        """Execute's (or AwaitApproval's) task: invoke with a token, retried as the ASL says. Returns
        (the live token or None, the next token number); sets run.execute_error when it failed for good."""
        names, max_attempts = _retried(state)
        for attempt in range(max_attempts + 1):
            token = f"tok-{build_id}-{action}-{token_no}"
            token_no += 1
            event = {"action": action, "buildId": build_id, "taskToken": token}
            _, error = self._invoke("dispatch", event, None, label=action)
            if error is None:
                return token, token_no
            name = type(error).__name__
            if isinstance(error, invocations.InvocationKilled):
                name = "Sandbox.Timedout" if isinstance(error, TimeLimit) else "Lambda.Unknown"
            if not _matches(names, name) or attempt == max_attempts:
                run.execute_error = name
                return None, token_no
        return None, token_no  # pragma: no cover

    def _answer(self, tokens: set[str]) -> tuple[str, dict[str, Any]] | None:
        for op, token, params in self.faults.answers:
            if token in tokens:
                return op, params
        return None

    def _plan(self, run: Run, name: str, payload: dict[str, Any]) -> bool:
        """The Plan step of execution `name`, which an API call started: True when it goes on (its
        run is the build's), False when it ends superseded. Its commit comes from that call; once the
        call is over (answered, or died) without it, Plan waits out the API's time limit."""
        from shared.logic import runs

        def committed() -> bool:
            build = services().builds.get(run.build_id)
            return build is not None and runs.current_run(build) == name

        for _ in range(600):
            if committed() or not self._racing:
                break
            self._join_races(0.05)
        if not committed():
            self.advance(runs.commit_wait_s())
            for invocation in self._race_invocations:  # past the API's time limit: a call still going is stopped
                invocation.kill()
        run.plans += 1
        self.faults.hold = True  # the harness puts no faults into planning
        try:
            event = {"action": "plan", "buildId": run.build_id, "execution": {"Name": name, "Input": payload}}
            result, error = self._invoke("plan", event, None, label="plan")
        finally:
            self.faults.hold = False
        assert error is None, error
        if result["superseded"]:
            run.superseded.append(name)
            return False
        return True

    def _finalize(self, build_id: str, error: dict[str, Any] | None, run: Run, name: str | None = None) -> None:
        _, max_attempts = _retried("Finalize")
        state: dict[str, Any] = {"buildId": build_id}
        if error:
            state["error"] = error
        for _ in range(max_attempts + 1):
            event = {"action": "finalize", "state": state, "runId": name}
            result, failure = self._invoke("dispatch", event, None, label="finalize")
            if failure is None:
                run.final = result
                return

    def cancel(self, build_id: str, run: Run) -> None:
        """A user cancels the build through the API (which may crash part way too)."""
        from local.apigw import proxy_event

        owner = services().builds.require(build_id).ownerId
        result, error = self._invoke("api", proxy_event("POST", f"/builds/{build_id}/cancel", user=owner), None)
        run.cancelled = run.cancelled or (error is None and int((result or {}).get("statusCode", 0)) == 202)
        if not run.cancelled:  # crashed or failed part way: did its commit land?
            run.cancelled = services().builds.require(build_id).status == "cancelled"

    def approve(
        self, build_id: str, run: Run, edits: dict[str, list[dict[str, Any]]], fault: Fault | None = None
    ) -> bool:
        """AwaitApproval, then two users approving with different edits at once: the second request
        races the first's commit. The first request may die part way (`fault`); if the approval step
        still waits then, its user sends it again later. True when the token was answered with a
        success; `run.approved` is the plan stored, and it must be one of the two edits."""
        self.edits = {f"approve:{name}": tasks for name, tasks in edits.items()}
        first, second = list(self.edits)
        token, _ = self._execute(build_id, run, 1, action="await_approval", state="AwaitApproval")
        if token is None:
            return False
        self.faults.races.append(Call(second, "approve", "dynamodb", "TransactWriteItems", 1))
        self.faults.hold = True  # the approvals race; the schedule's faults wait for the run
        try:
            self._api_as(first, run, fault)
            if self._answer({token}) is None:  # it died part way: its user tries again, later
                self.advance(self._commit_wait_s())
                self._api_as(first, run)
        finally:
            self.faults.hold = False
        answered = self._answer({token})
        if answered is not None and answered[0] == "SendTaskSuccess":
            run.approved = [t.taskId for t in services().tasks.list(build_id)]
        return answered is not None and answered[0] == "SendTaskSuccess"

    @staticmethod
    def _commit_wait_s() -> float:
        from shared.logic import runs

        return runs.commit_wait_s()

    def _api_as(self, action: str, run: Run, fault: Fault | None = None) -> None:
        """One API request as its own invocation (labelled for the Calls that race it), which may
        carry a fault of its own."""
        invocation = invocations.Invocation(action.split(":")[0])

        def go() -> None:
            invocations.current.set(invocation)
            try:
                self._api_now(action, run, fault)
            except BaseException:
                run.answers.append((action, None, 0))

        contextvars.Context().run(go)
        self._join_races()

    def _api_now(self, action: str, run: Run, fault: Fault | None = None) -> None:
        from local.apigw import proxy_event

        owner = services().builds.require(run.build_id).ownerId
        if fault is not None:
            _call_fault.set({"fault": fault, "n": 0, "fired": False})
        body = json.dumps({"approved": True, "tasks": self.edits[action]})
        result = load_handler("api")(
            proxy_event("POST", f"/builds/{run.build_id}/approval", user=owner, body=body), lambda_context("api")
        )
        run.answers.append((action, None, int(result.get("statusCode", 0))))

    def run_build(
        self,
        build_id: str,
        *,
        order: list[str] | None = None,
        cancel_at: int | None = None,
        timeout_at: int | None = None,
        approvals: dict[str, list[dict[str, Any]]] | None = None,
        approval_fault: Fault | None = None,
        max_steps: int = 600,
    ) -> Run:
        """Run the build to its end, and every run an API call re-opens after it. `order`: task ids
        whose messages are delivered first, in turn; `cancel_at`: the delivery before which a user
        cancels the build; `timeout_at`: the delivery at which the first run's Execute state times
        out; `approvals`: the build awaits approval and two users approve it with these edits."""
        run = Run(build_id)
        self._run = run
        self._expiries = 0
        self.inbox = []
        drain_queue(client("sqs"), self.quiet.resources.queues["tasks"])
        drain_queue(client("sqs"), self.quiet.resources.queues["task-finished.fifo"])
        if approvals is not None and not self.approve(build_id, run, approvals, approval_fault):
            error = run.execute_error or "ApprovalTimeout"
            self._finalize(build_id, {"Error": error, "Cause": "The plan was not approved."}, run)
            return run
        token_no = 1
        name = build_id  # the run's execution: the first is named by the build
        while True:
            token, token_no = self._execute(build_id, run, token_no)
            tokens = {token} if token else set()
            cancel_at = self._pump(run, list(order or []), cancel_at, timeout_at, max_steps)
            order, timeout_at = None, None
            if run.cancelled:  # the cancel stopped the execution: no Finalize
                break
            answered = self._answer(tokens)
            if run.execute_error:
                self._finalize(build_id, {"Error": run.execute_error, "Cause": "injected"}, run, name)
            elif answered is None:  # nothing answered: the state's timeout fires
                run.timed_out = True
                self._finalize(build_id, {"Error": "BuildTimedOut", "Cause": "The build ran past its time limit."}, run, name)
            elif answered[0] == "SendTaskSuccess":
                self._finalize(build_id, None, run, name)
            else:
                params = answered[1]
                self._finalize(build_id, {"Error": params.get("error"), "Cause": params.get("cause")}, run, name)
            # What is still in flight goes on being consumed after the run's end; then users act.
            self._pump(run, [], None, None, max_steps)
            for call in [r for r in self.faults.races if r.during == "end"]:
                self.faults.races.remove(call)
                self.faults.raced.append(call)
                self._race(call)  # it may wait for the next run's end, which the driver plays
            if not self.faults.started:
                self._join_races()
            if run.cancelled or run.runs >= 4:
                break
            # A retry or skip after the end started another execution: its Plan step runs it if its
            # commit landed, and ends it (superseded) if the call that started it died first.
            name = ""
            while self.faults.started and not name:
                started, payload = self.faults.started.pop(0)
                if self._plan(run, started, payload):
                    name = started
            if not name:
                break
            run.runs += 1
            run.execute_error, run.timed_out = None, False
        run.expiries = self._expiries
        return run

    def _pump(self, run: Run, order: list[str], cancel_at: int | None, timeout_at: int | None, max_steps: int) -> int | None:
        """Deliver messages until none is left (or the Execute state times out at `timeout_at`)."""
        for _ in range(max_steps):
            self._collect()
            if cancel_at is not None and run.deliveries >= cancel_at and not run.cancelled:
                cancel_at = None
                self.cancel(run.build_id, run)
                continue
            if timeout_at is not None and run.deliveries >= timeout_at:
                break
            if not self.inbox and self._racing:  # what the API calls still racing will send
                self._join_races()
                continue
            if not self.inbox:
                break
            visible = [m for m in self.inbox if m.visible_at <= self.clock]
            if not visible:  # everything waits: time passes
                self.advance(min(m.visible_at for m in self.inbox) - self.clock)
                continue
            first = [m for m in visible if order and m.queue == "tasks" and m.body.get("taskId") == order[0]]
            if first:
                order.pop(0)
            m = first[0] if first else visible[self.rnd.randrange(len(visible))]
            self.inbox.remove(m)
            if m.queue == "dlq":
                self._deliver_dead(m, run)
            else:
                self.deliver(m, run)
        self._collect()
        return cancel_at

    @property
    def clock(self) -> float:
        """Fake seconds ahead of real time (shared.ids.now_ms follows it; so do the SDK's backoffs)."""
        return _Clock.offset_s

    def advance(self, seconds: float) -> None:
        _Clock.offset_s += max(0.0, seconds)


class _Clock:
    """shared.ids' clock, moved forward by the driver (moto and boto keep real time); the services'
    clock follows it."""

    offset_s = 0.0

    @staticmethod
    def time() -> float:
        import time

        return time.time() + _Clock.offset_s


class _ServicesClock(Clock):
    """The services' clock (what the logic reads), on the driver's time."""

    def time(self) -> float:
        return _Clock.time()


@contextlib.contextmanager
def fake_clock() -> Iterator[None]:
    import shared.ids

    saved = shared.ids.time
    shared.ids.time = _Clock  # type: ignore[assignment]
    use_clock(_ServicesClock())
    try:
        yield
    finally:
        use_clock(None)
        shared.ids.time = saved
        _Clock.offset_s = 0.0


# --- what must hold --------------------------------------------------------------------------------
def check_invariants(run: Run) -> BuildRecord:
    """Assert what holds however the faults fell; returns the build for further checks."""
    svc = services()
    build = svc.builds.require(run.build_id)
    events = svc.events.read(run.build_id, after=0, limit=10_000)[0]
    items = {t.taskId: t for t in svc.tasks.list(run.build_id)}
    where = f"build {run.build_id}: {[(e.seq, e.type.value, e.data.get('taskId'), e.data.get('attempt')) for e in events]}"

    assert build.status in TERMINAL_BUILD_STATUSES, where
    assert [e.seq for e in events] == list(range(1, len(events) + 1)), f"seqs not gap-free: {where}"
    # A retry or skip after the end re-opens the build (build_resumed): each run ends once.
    runs: list[list[Any]] = [[]]
    for e in events:
        if e.type.value == "build_resumed":
            runs.append([])
        runs[-1].append(e)
    for events_of_run in runs:
        seen = [json.dumps([e.type.value, e.data], sort_keys=True) for e in events_of_run]
        assert len(seen) == len(set(seen)), f"an event was written twice: {where}"
        terminal = [e for e in events_of_run if e.type.value in ("build_completed", "build_failed", "build_cancelled")]
        assert len(terminal) == 1, f"one terminal event per run: {where}"
    # After the end only an attempt already running may still report how it ended: no task starts.
    end = max(i for i, e in enumerate(events) if e.type.value in ("build_completed", "build_failed", "build_cancelled"))
    before = {(e.data.get("taskId"), e.data.get("attempt")) for e in events[:end] if e.type.value == "task_started"}
    for e in events[end + 1 :]:
        assert e.type.value in ("task_completed", "task_failed", "task_timeout"), f"{e.type.value} after the end: {where}"
        assert any(t == e.data["taskId"] for t, _ in before), f"{e.data['taskId']} settled after the end, never started: {where}"
    started = [(e.data["taskId"], e.data["attempt"]) for e in events if e.type.value == "task_started"]
    assert len(started) == len(set(started)), f"an attempt started twice: {where}"
    # A task a user retried (accepted, or by a call that died: it may have committed) may run again
    # and complete; no other.
    retried = {task for action, task, status in run.answers if action == "retry" and status in (0, 202)}
    for_good: set[str] = set()
    for e in events:
        if e.data.get("taskId") in retried:
            continue
        if e.type.value in ("task_failed", "task_timeout") and not e.data.get("willRetry"):
            for_good.add(e.data["taskId"])
        if e.type.value == "task_completed":
            assert e.data["taskId"] not in for_good, f"{e.data['taskId']} failed for good, then completed: {where}"
    for task_id, item in items.items():
        assert item.status != "in_progress", f"{task_id} is in_progress after its build ended: {where}"
        if item.status == "completed":
            assert task_id not in for_good, where
    # The record models hold every attribute the engine stored, however the faults fell: a read
    # parses the item once and drops nothing a step wrote.
    ddb = client("dynamodb")
    stored = ddb.get_item(TableName=svc.builds.table, Key={"buildId": {"S": run.build_id}}, ConsistentRead=True)
    assert set(stored["Item"]) <= set(BuildRecord.model_fields), set(stored["Item"]) - set(BuildRecord.model_fields)
    for raw in ddb.query(
        TableName=svc.tasks.table, KeyConditionExpression="buildId = :b", ExpressionAttributeValues={":b": {"S": run.build_id}}
    )["Items"]:
        assert set(raw) <= set(TaskRecord.model_fields), set(raw) - set(TaskRecord.model_fields)
    return build
