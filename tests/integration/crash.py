"""The crash harness's machinery: the real handlers on moto, fed by a driver that plays SQS, Lambda
and Step Functions, with faults injected at the handlers' I/O boundaries.

- `Faults` fires a schedule of faults at boto3 calls made inside an invocation: before or after a
  DynamoDB commit, an SQS send, an S3 put, a Step Functions callback. A *crash* kills the invocation
  there (`local.invocations`: that call, and every later one from any of its threads, never leaves
  the process), before the call or after it committed; a *lost response* makes the call commit
  and then sends it again, as the SDK does when a response is lost; an *error* fails the call as
  a service error would after the SDK's own retries; an *expiry* makes the message being handled
  visible again while its work runs, so a second consumer (another process: its own Services)
  takes it there and then.
- `Driver` holds the messages in flight with their receive counts and visibility, delivers them in
  a random order (again, sometimes, after they were deleted), moves a message past its
  maxReceiveCount to its DLQ (the tasks DLQ is consumed by the dispatcher, as deployed), and plays
  the state machine from infra/statemachine.asl.json: Execute with its task token and its Retry
  rules, the token's answer, the state's timeout, Finalize with its retries. Time is a fake clock
  the driver moves forward when every message waits.
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

from botocore.exceptions import ClientError

from local import invocations
from local.runtime import ASL_PATH, load_handler
from shared import limits
from shared.clock import Clock
from shared.dal.aws import add_client_hook, client
from shared.logic import task_runner
from shared.logic.services import Services, services, use_clock
from shared.models.build import TERMINAL_BUILD_STATUSES
from shared.settings import get_settings
from tests.helpers import drain_queue, sqs_event, sqs_record
from tests.integration.quiet import QuietRuntime, lambda_context

# The I/O boundaries a fault can hit: (service, operation).
BOUNDARIES: tuple[tuple[str, str], ...] = (
    ("dynamodb", "TransactWriteItems"),
    ("dynamodb", "PutItem"),
    ("dynamodb", "UpdateItem"),
    ("sqs", "SendMessageBatch"),
    ("s3", "PutObject"),
    ("sfn", "SendTaskSuccess"),
    ("sfn", "SendTaskFailure"),
)
KINDS = ("crash_before", "crash_after", "lost_response", "error", "expiry")


@dataclass(frozen=True)
class Fault:
    service: str
    operation: str
    nth: int  # fires at the nth call of that operation made inside an invocation (1-based)
    kind: str


@dataclass
class Delivery:
    """What the invocation being run was handed: its queue and message (for an expiry)."""

    queue: str
    body: dict[str, Any]


_delivery: contextvars.ContextVar[Delivery | None] = contextvars.ContextVar("harness_delivery", default=None)
_nested: contextvars.ContextVar[bool] = contextvars.ContextVar("harness_nested", default=False)
_replaying = threading.local()


class Faults:
    """A schedule of faults, fired at boto3 calls made inside an invocation (installed once per
    process; inactive outside `active`)."""

    def __init__(self) -> None:
        self.schedule: list[Fault] = []
        self.calls: dict[tuple[str, str], int] = {}
        self.fired: list[Fault] = []
        self.answers: list[tuple[str, str, dict[str, Any]]] = []  # Step Functions callbacks that left
        self.visibility: dict[str, float] = {}  # receipt handle -> the last visibility asked
        self.on_expiry: Any = None  # Driver callback: run the current message in a second consumer
        self._lock = threading.Lock()
        self.enabled = False
        add_client_hook(self._install)

    @contextlib.contextmanager
    def active(self, schedule: list[Fault]) -> Iterator[Faults]:
        self.schedule, self.calls, self.fired, self.answers, self.visibility = list(schedule), {}, [], [], {}
        self.enabled = True
        try:
            yield self
        finally:
            self.enabled = False

    # --- botocore hooks ----------------------------------------------------------------------------
    def _install(self, c: Any) -> None:
        service = c.meta.service_model.service_name
        service = "sfn" if service == "stepfunctions" else service
        c.meta.events.register("before-parameter-build", lambda **kw: self._stash(**kw))
        c.meta.events.register("before-call", lambda **kw: self._before(c, service, **kw))
        c.meta.events.register("after-call", lambda **kw: self._after(c, service, **kw))

    @staticmethod
    def _stash(params: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
        context["harness_params"] = dict(params)

    def _before(self, c: Any, service: str, model: Any, context: dict[str, Any], **_: Any) -> None:
        if not self.enabled or getattr(_replaying, "on", False):
            return
        op = model.name
        params = context.get("harness_params") or {}
        if op == "ChangeMessageVisibility":
            self.visibility[str(params.get("ReceiptHandle"))] = float(params.get("VisibilityTimeout", 0))
        invocation = invocations.current.get()
        if invocation is None or _nested.get():
            return
        with self._lock:
            key = (service, op)
            n = self.calls[key] = self.calls.get(key, 0) + 1
            fault = next((f for f in self.schedule if (f.service, f.operation, f.nth) == (service, op, n)), None)
            if fault is not None:
                self.fired.append(fault)
        if fault is None:
            return
        context["harness_fault"] = fault.kind
        if fault.kind == "crash_before":
            invocation.kill()
            raise invocations.InvocationKilled(f"crashed before {op}")
        if fault.kind == "error":
            raise ClientError({"Error": {"Code": "ServiceUnavailable", "Message": "injected"}}, op)
        if fault.kind == "expiry" and self.on_expiry is not None:
            delivery = _delivery.get()
            if delivery is not None and delivery.queue == "tasks":
                self.on_expiry(delivery)

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


class Driver:
    """Plays SQS, the Lambda service and Step Functions for one build at a time."""

    def __init__(self, quiet: QuietRuntime, faults: Faults, rnd: random.Random, *, duplicate_p: float = 0.2) -> None:
        self.quiet = quiet
        self.faults = faults
        self.rnd = rnd
        self.duplicate_p = duplicate_p
        self.inbox: list[Message] = []
        self.clock = _Clock.offset_s  # fake seconds ahead of real time (shared.ids.now_ms follows it)
        settings = get_settings()
        self.lease_s = float(limits.task_lease_s(settings.task_timeout_seconds))
        self.recovery_bound_s = limits.crash_recovery_bound_s(settings.task_timeout_seconds)
        self.task_visibility_s = float(limits.queue_visibility_s("tasks", settings.task_timeout_seconds))
        self.finished_visibility_s = float(limits.queue_visibility_s("task-finished", settings.task_timeout_seconds))
        faults.on_expiry = self._expire

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

    def _invoke(self, function: str, event: dict[str, Any], delivery: Delivery | None) -> tuple[Any, BaseException | None]:
        """One invocation of `function`, its calls marked as its own (a fault may kill it)."""
        invocation = invocations.Invocation(function)
        outcome: dict[str, Any] = {}

        def run() -> None:
            invocations.current.set(invocation)
            _delivery.set(delivery)
            try:
                outcome["result"] = load_handler(function)(event, lambda_context(function))
            except BaseException as exc:
                outcome["error"] = exc

        contextvars.Context().run(run)
        return outcome.get("result"), outcome.get("error")

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
        result, error = self._invoke(function, sqs_event([record]), Delivery(m.queue, m.body))
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
        msg = task_runner.TaskMessage.model_validate(delivery.body)
        other = Services(get_settings())

        def second() -> None:
            invocations.current.set(invocations.Invocation("task-second"))
            _nested.set(True)
            with contextlib.suppress(Exception):  # whatever it raises, its message stays queued
                task_runner.run_task(msg, lambda: 600_000, other)

        thread = threading.Thread(target=contextvars.Context().run, args=(second,), daemon=True)
        thread.start()
        thread.join(60)

    _expiries = 0

    # --- the state machine -------------------------------------------------------------------------
    def _execute(self, build_id: str, run: Run, token_no: int) -> tuple[str | None, int]:
        """Execute's task: invoke with a token, retried as the ASL says. Returns (the live token or
        None, the next token number); sets run.execute_error when Execute failed for good."""
        names, max_attempts = _retried("Execute")
        for attempt in range(max_attempts + 1):
            token = f"tok-{build_id}-{token_no}"
            token_no += 1
            event = {"action": "execute", "buildId": build_id, "taskToken": token}
            _, error = self._invoke("dispatch", event, None)
            if error is None:
                return token, token_no
            name = "Lambda.Unknown" if isinstance(error, invocations.InvocationKilled) else type(error).__name__
            if not _matches(names, name) or attempt == max_attempts:
                run.execute_error = name
                return None, token_no
        return None, token_no  # pragma: no cover

    def _answer(self, tokens: set[str]) -> tuple[str, dict[str, Any]] | None:
        for op, token, params in self.faults.answers:
            if token in tokens:
                return op, params
        return None

    def _finalize(self, build_id: str, error: dict[str, Any] | None, run: Run) -> None:
        _, max_attempts = _retried("Finalize")
        state: dict[str, Any] = {"buildId": build_id}
        if error:
            state["error"] = error
        for _ in range(max_attempts + 1):
            result, failure = self._invoke("dispatch", {"action": "finalize", "state": state}, None)
            if failure is None:
                run.final = result
                return

    def cancel(self, build_id: str, run: Run) -> None:
        """A user cancels the build through the API (which may crash part way too)."""
        from local.apigw import proxy_event

        owner = services().builds.require(build_id)["ownerId"]
        result, error = self._invoke("api", proxy_event("POST", f"/builds/{build_id}/cancel", user=owner), None)
        run.cancelled = run.cancelled or (error is None and int((result or {}).get("statusCode", 0)) == 202)
        if not run.cancelled:  # crashed or failed part way: did its commit land?
            run.cancelled = services().builds.require(build_id)["status"] == "cancelled"

    def run_build(
        self, build_id: str, *, order: list[str] | None = None, cancel_at: int | None = None, max_steps: int = 600
    ) -> Run:
        """Run the build to its end. `order`: task ids whose messages are delivered first, in turn;
        `cancel_at`: the delivery before which a user cancels the build."""
        order = list(order or [])
        run = Run(build_id)
        self._expiries = 0
        self.inbox = []
        drain_queue(client("sqs"), self.quiet.resources.queues["tasks"])
        drain_queue(client("sqs"), self.quiet.resources.queues["task-finished.fifo"])
        token, _ = self._execute(build_id, run, 1)
        tokens = {token} if token else set()
        answered: tuple[str, dict[str, Any]] | None = None
        for _ in range(max_steps):
            self._collect()
            answered = answered or self._answer(tokens)
            if cancel_at is not None and run.deliveries >= cancel_at and not run.cancelled:
                cancel_at = None
                self.cancel(build_id, run)
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
        run.expiries = self._expiries
        self._collect()
        answered = answered or self._answer(tokens)
        if run.cancelled:  # the cancel stopped the execution: no Finalize
            return run
        if run.execute_error:
            self._finalize(build_id, {"Error": run.execute_error, "Cause": "injected"}, run)
        elif answered is None:  # nothing will answer: the state's timeout fires
            run.timed_out = True
            self._finalize(build_id, {"Error": "BuildTimedOut", "Cause": "The build ran past its time limit."}, run)
        elif answered[0] == "SendTaskSuccess":
            self._finalize(build_id, None, run)
        else:
            params = answered[1]
            self._finalize(build_id, {"Error": params.get("error"), "Cause": params.get("cause")}, run)
        return run

    def advance(self, seconds: float) -> None:
        self.clock += max(0.0, seconds)
        _Clock.offset_s = self.clock


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
def check_invariants(run: Run) -> dict[str, Any]:
    """Assert what holds however the faults fell; returns the build for further checks."""
    svc = services()
    build = svc.builds.require(run.build_id)
    events = svc.events.read(run.build_id, after=0, limit=10_000)[0]
    items = {t["taskId"]: t for t in svc.tasks.list(run.build_id)}
    where = f"build {run.build_id}: {[(e.seq, e.type.value, e.data.get('taskId'), e.data.get('attempt')) for e in events]}"

    assert build["status"] in TERMINAL_BUILD_STATUSES, where
    assert [e.seq for e in events] == list(range(1, len(events) + 1)), f"seqs not gap-free: {where}"
    seen = [json.dumps([e.type.value, e.data], sort_keys=True) for e in events]
    assert len(seen) == len(set(seen)), f"an event was written twice: {where}"
    terminal = [e for e in events if e.type.value in ("build_completed", "build_failed", "build_cancelled")]
    assert len(terminal) == 1, f"one terminal event: {where}"
    started = [(e.data["taskId"], e.data["attempt"]) for e in events if e.type.value == "task_started"]
    assert len(started) == len(set(started)), f"an attempt started twice: {where}"
    for_good: set[str] = set()
    for e in events:
        if e.type.value in ("task_failed", "task_timeout") and not e.data.get("willRetry"):
            for_good.add(e.data["taskId"])
        if e.type.value == "task_completed":
            assert e.data["taskId"] not in for_good, f"{e.data['taskId']} failed for good, then completed: {where}"
    for task_id, item in items.items():
        assert item["status"] != "in_progress", f"{task_id} is in_progress after its build ended: {where}"
        if item["status"] == "completed":
            assert task_id not in for_good, where
    return build
