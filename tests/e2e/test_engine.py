"""The DAG engine end to end: scripted-mock builds through the real local runtime (moto, the ASL
state machine, the dispatcher, the task consumer), observed as a user sees them: the HTTP API,
the event log, build and task statuses, files.

One runtime per configuration (a class each: env is read when the runtime starts). Each test makes
its own build with its own prompt (so the task cache never links two tests) and its own mock
script: `Engine.build` writes the script to the runtime's STEPWISE_MOCK_SCRIPT file and drops the
cached provider, so the next build reads it afresh (the runtime is in-process).
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from local.runtime import LocalRuntime
from tests.helpers import ShiftedClock, task, wait_for

pytestmark = pytest.mark.e2e

USER = "dev"
TERMINAL = ("build_completed", "build_failed", "build_cancelled")
# Long enough to outlast one lost SQS receive in the local runtime (the message comes back after its
# visibility timeout, TASK_TIMEOUT_SECONDS + 30 s); a healthy build here ends within seconds.
WAIT_S = 75.0
# The original design's copy, without the "Proceed?" nobody could answer: the build goes on.
SEQUENTIAL_COPY = "We couldn't optimize task order, so steps will run one-by-one. Expect a slightly longer build."


class Engine:
    def __init__(self, rt: LocalRuntime, script_path: Path, clock: ShiftedClock | None = None) -> None:
        self.rt = rt
        self.script_path = script_path
        self.clock = clock  # the handlers' time, when the runtime was given one: a test moves it on

    # --- requests ----------------------------------------------------------------------------------
    def api(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        return self.rt.invoke_api(method, path, user=USER, body=body)

    def use_script(self, script: dict[str, Any]) -> None:
        from shared.logic.services import reset_services
        from shared.providers.factory import reset_providers

        self.script_path.write_text(json.dumps(script))
        reset_providers()
        reset_services()

    def build(self, prompt: str, script: dict[str, Any], **body: Any) -> str:
        self.use_script(script)
        status, created = self.api("POST", "/builds", {"prompt": prompt, **body})
        assert status == 202, created
        return str(created["buildId"])

    def view(self, build_id: str) -> dict[str, Any]:
        status, view = self.api("GET", f"/builds/{build_id}")
        assert status == 200, view
        return dict(view)

    def events(self, build_id: str) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        while True:
            status, page = self.rt.invoke_api(
                "GET", f"/builds/{build_id}/events", user=USER, query={"after": str(len(out)), "limit": "1000"}
            )
            assert status == 200, page
            out += page["events"]
            if not page["events"] or page["next"] is None:
                return out

    # --- waiting -----------------------------------------------------------------------------------
    def wait_event(self, build_id: str, kind: str, *, count: int = 1, timeout: float = WAIT_S) -> list[dict[str, Any]]:
        """The log once it holds `count` events of type `kind`."""

        def probe() -> list[dict[str, Any]] | None:
            events = self.events(build_id)
            return events if len(of(events, kind)) >= count else None

        try:
            return wait_for(probe, timeout=timeout, interval=0.05, what=f"{count} x {kind} in {build_id}")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; {self.diagnose(build_id)}") from None

    def wait_end(self, build_id: str, *, ends: int = 1, timeout: float = WAIT_S) -> list[dict[str, Any]]:
        """The log once the build has ended `ends` times (a retried build ends again)."""

        def probe() -> list[dict[str, Any]] | None:
            events = self.events(build_id)
            return events if sum(e["type"] in TERMINAL for e in events) >= ends else None

        try:
            return wait_for(probe, timeout=timeout, interval=0.05, what=f"end #{ends} of {build_id}")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; {self.diagnose(build_id)}") from None

    def wait_idle(self) -> None:
        """Until no task or "task finished" message is waiting, delayed or being handled: nothing
        can start any more (instead of asserting "nothing happened" after a fixed sleep)."""
        from shared.dal.aws import client

        counts = [
            "ApproximateNumberOfMessages",
            "ApproximateNumberOfMessagesNotVisible",
            "ApproximateNumberOfMessagesDelayed",
        ]

        def idle() -> bool:
            for name in ("tasks", "tasks-dlq", "task-finished.fifo"):
                url = self.rt.resources.queues[name]
                attrs = client("sqs").get_queue_attributes(QueueUrl=url, AttributeNames=counts)["Attributes"]
                if any(int(attrs.get(k, 0)) for k in counts):
                    return False
            return True

        wait_for(idle, timeout=WAIT_S, what="the task queues to drain")

    def diagnose(self, build_id: str) -> str:
        """What a stuck build looks like inside: its events, status, dispatch state, workflow, queues."""
        from shared.dal.aws import client
        from shared.logic.services import services

        events = services().events.read(build_id, after=0, limit=1000)[0]
        seen = [(e.seq, e.type.value, e.data.get("taskId"), e.data.get("attempt")) for e in events]
        build = services().builds.get(build_id)
        try:
            steps = []
            from shared.logic import runs

            names = [build_id, runs.current_run(build)] if build is not None and build.runs > 1 else [build_id]
            for run, name in enumerate(names, 1):
                arn = services().workflow.execution_arn(name)
                history = client("stepfunctions").get_execution_history(executionArn=arn, maxResults=200)["events"]
                steps += [f"run{run}", *[h["type"] + ":" + str(h.get("stateEnteredEventDetails", {}).get("name", "")) for h in history][-12:]]
        except Exception as err:  # diagnostics only
            steps = [repr(err)]
        queues = {}
        for name, url in self.rt.resources.queues.items():
            attrs = client("sqs").get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
            queues[name] = (
                attrs.get("ApproximateNumberOfMessages"),
                attrs.get("ApproximateNumberOfMessagesNotVisible"),
            )
        return (
            f"events {seen}; status {build.status if build else None}; dispatch {build.dispatch if build else None}; "
            f"workflow {steps}; queues (visible, in flight) {queues}"
        )


def of(events: list[dict[str, Any]], kind: str, task_id: str | None = None) -> list[dict[str, Any]]:
    return [e for e in events if e["type"] == kind and (task_id is None or e["data"].get("taskId") == task_id)]


def seq_of(events: list[dict[str, Any]], kind: str, task_id: str | None = None) -> int:
    found = of(events, kind, task_id)
    assert len(found) == 1, f"expected one {kind} {task_id or ''}, got {len(found)}"
    return int(found[0]["seq"])


def end_of(events: list[dict[str, Any]]) -> dict[str, Any]:
    """The build's latest end (events of a task in flight may still land after it)."""
    ends = [e for e in events if e["type"] in TERMINAL]
    assert ends, "the build has not ended"
    return ends[-1]


def check_log(events: list[dict[str, Any]]) -> None:
    """The event log invariants every build keeps: seq 1..n, unique ids, one start."""
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert len({e["id"] for e in events}) == len(events)
    assert events[0]["type"] == "build_started"


@pytest.fixture(scope="class")
def engine(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    env: dict[str, str] = getattr(request.cls, "ENV", {})
    script = tmp_path_factory.mktemp("engine") / "script.json"
    script.write_text("{}")
    full = {
        "TASK_RETRY_BASE_SECONDS": "0",
        "TASK_MAX_ATTEMPTS": "3",
        "STEPWISE_MOCK_SCRIPT": str(script),
        **env,
    }
    clock = ShiftedClock()
    with LocalRuntime(env=full, clock=clock) as rt:
        yield Engine(rt, script, clock)


def plan_running() -> bool:
    """Whether an invocation of the plan function is still running (`local.invocations`)."""
    return any(t.name.endswith("-plan-invocation") and t.is_alive() for t in threading.enumerate())


@contextlib.contextmanager
def planning_first() -> Iterator[None]:
    """STREAM_EXECUTION=false for what runs inside: the whole plan is stored before any task starts
    (tests of what the scheduler does with a known plan)."""
    import os

    from shared.settings import reset_settings

    os.environ["STREAM_EXECUTION"] = "false"
    reset_settings()
    try:
        yield
    finally:
        os.environ.pop("STREAM_EXECUTION", None)
        reset_settings()


def fast(**extra: Any) -> dict[str, Any]:
    return {"default_task": {"delay_ms": 0, **extra}}


def max_in_flight(events: list[dict[str, Any]]) -> int:
    """The most tasks between their task_started and their outcome at once, by event order."""
    running: set[str] = set()
    most = 0
    for e in events:
        if e["type"] == "task_started":
            running.add(e["data"]["taskId"])
            most = max(most, len(running))
        elif e["type"] in ("task_completed", "task_failed", "task_timeout"):
            running.discard(e["data"]["taskId"])
    return most


def started_order(events: list[dict[str, Any]]) -> list[str]:
    return [e["data"]["taskId"] for e in of(events, "task_started")]


def task_status(view: dict[str, Any]) -> dict[str, str]:
    return {t["id"]: t["status"] for t in view["plan"]["tasks"]}


def cyclic_pair(**extra_a: Any) -> list[dict[str, Any]]:
    """a needs b and b needs a, with equal priorities: rung A has no principled edge to drop."""
    return [task("a", "b", target="a.txt", **extra_a), task("b", "a", target="b.txt")]


STILL_CYCLIC = {"tasks": [{"id": "a", "dependencies": ["b"]}, {"id": "b", "dependencies": ["a"]}]}


# ==================================================================================================
class TestEngine:
    """Default engine settings: linear fallback allowed, approval asked per build, 3 attempts."""

    ENV = {"TASK_TIMEOUT_SECONDS": "1"}

    # --- a step interrupted, retried by the state machine --------------------------------------------
    def test_a_failed_send_in_the_execute_step_is_retried_by_the_state_machine(
        self, engine: Engine, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        from shared.logic.readiness import dispatch_state

        original, failed = dispatch_state.send_batch, []

        def fails_once(url: str, entries: list[dict[str, Any]]) -> None:
            if not failed and any(json.loads(e["MessageBody"])["taskId"] == "exec-retry" for e in entries):
                failed.append(url)
                raise RuntimeError("SQS refused the send")
            original(url, entries)

        monkeypatch.setattr(dispatch_state, "send_batch", fails_once)
        plan = [task("exec-retry", target="a.txt"), task("after", "exec-retry", target="b.txt")]
        # The first send must be the Execute step's: nothing starts while the plan streams (a failed
        # send there: tests/e2e/test_streaming.py).
        with planning_first():
            bid = engine.build("execute retried", {"plan": {"tasks": plan}, **fast()})
            events = engine.wait_end(bid)
        check_log(events)
        assert failed  # the execute step did fail once
        assert end_of(events)["type"] == "build_completed" and end_of(events)["data"]["status"] == "completed"
        assert sorted(started_order(events)) == ["after", "exec-retry"]  # each started once

    # --- cycles: the recovery ladder ---------------------------------------------------------------
    def test_rung_a_drops_the_lowest_priority_edge_silently(self, engine: Engine) -> None:
        plan = [task("a", "b", priority=1, target="a.txt"), task("b", "a", priority=5, target="b.txt")]
        bid = engine.build("rung A", {"plan": {"tasks": plan}, **fast()})
        events = engine.wait_end(bid)
        check_log(events)
        assert not of(events, "plan_warning") and not of(events, "plan_blocked")
        generated = of(events, "plan_generated")[0]["data"]
        assert generated["recovery"] == "auto-priority"
        # b (priority 5, lower) loses its need for a; a still needs b
        assert {t["id"]: t["dependsOn"] for t in generated["tasks"]} == {"a": ["b"], "b": []}
        assert seq_of(events, "task_completed", "b") < seq_of(events, "task_started", "a")
        assert end_of(events)["type"] == "build_completed" and end_of(events)["data"]["status"] == "completed"
        assert engine.view(bid)["recovery"] == "auto-priority"

    def test_rung_b_takes_the_llms_acyclic_dependencies(self, engine: Engine) -> None:
        healed = {"tasks": [{"id": "a", "dependencies": []}, {"id": "b", "dependencies": ["a"]}]}
        bid = engine.build("rung B", {"plan": {"tasks": cyclic_pair()}, "heal": [healed], **fast()})
        events = engine.wait_end(bid)
        check_log(events)
        assert not of(events, "plan_warning")
        generated = of(events, "plan_generated")[0]["data"]
        assert generated["recovery"] == "llm-healed"
        assert {t["id"]: t["dependsOn"] for t in generated["tasks"]} == {"a": [], "b": ["a"]}
        assert seq_of(events, "task_completed", "a") < seq_of(events, "task_started", "b")
        assert end_of(events)["data"]["status"] == "completed"
        assert engine.view(bid)["recovery"] == "llm-healed"

    def test_rung_c_runs_one_by_one_with_the_sequential_warning(self, engine: Engine) -> None:
        plan = [*cyclic_pair(), task("c", priority=1, target="c.txt"), task("d", target="d.txt")]
        script = {"plan": {"tasks": plan}, "heal": [STILL_CYCLIC], **fast(delay_ms=50)}
        bid = engine.build("rung C", script, maxConcurrency=5)
        events = engine.wait_end(bid)
        check_log(events)
        warnings = of(events, "plan_warning")
        assert [w["data"]["warning"] for w in warnings] == ["sequential_execution"]
        assert warnings[0]["data"]["message"] == SEQUENTIAL_COPY
        assert warnings[0]["data"]["cycles"] == ["a → b → a"]
        generated = of(events, "plan_generated")[0]
        assert generated["data"]["recovery"] == "linear-fallback"
        assert warnings[0]["seq"] < generated["seq"]
        # c and d were handed to the dispatch state as the plan streamed (STREAM_EXECUTION): they keep
        # their dependencies; the rung acts on the cycle, a and b, which run one by one after them
        order = started_order(events)
        assert sorted(order[:2]) == ["c", "d"] and order[2:] == ["a", "b"]
        assert max(seq_of(events, "task_completed", t) for t in "cd") < seq_of(events, "task_started", "a")
        assert seq_of(events, "task_completed", "a") < seq_of(events, "task_started", "b")
        assert end_of(events)["data"]["status"] == "completed"
        assert engine.view(bid)["recovery"] == "linear-fallback"

    # --- failures ----------------------------------------------------------------------------------
    def test_a_task_failing_twice_then_succeeding(self, engine: Engine) -> None:
        script = {"plan": {"tasks": [task("flaky", target="flaky.txt")]}, "tasks": {"flaky": {"fail_attempts": 2}}}
        bid = engine.build("fails twice", {**script, **fast()})
        events = engine.wait_end(bid)
        check_log(events)
        failed = [(e["data"]["attempt"], e["data"]["willRetry"]) for e in of(events, "task_failed")]
        assert failed == [(1, True), (2, True)]
        assert [e["data"]["attempt"] for e in of(events, "task_started")] == [1, 2, 3]
        assert seq_of(events, "task_completed", "flaky") > max(e["seq"] for e in of(events, "task_started"))
        assert end_of(events)["data"]["status"] == "completed"
        flaky = engine.view(bid)["plan"]["tasks"][0]
        assert (flaky["status"], flaky["attempt"]) == ("completed", 3)

    def test_a_task_failing_for_good_skips_its_dependents_only(self, engine: Engine) -> None:
        plan = [
            task("base", target="base.txt"),
            task("child", "base", target="child.txt"),
            task("grandchild", "child", target="grandchild.txt"),
            task("other", target="other.txt"),
            task("other-child", "other", target="other-child.txt"),
        ]
        bid = engine.build(
            "fails for good", {"plan": {"tasks": plan}, "tasks": {"base": {"fail_attempts": 9}}, **fast()}
        )
        events = engine.wait_end(bid)
        check_log(events)
        failed = [(e["data"]["attempt"], e["data"]["willRetry"]) for e in of(events, "task_failed")]
        assert failed == [(1, True), (2, True), (3, False)]
        assert sorted((e["data"]["taskId"], e["data"]["dependency"]) for e in of(events, "task_skipped")) == [
            ("child", "base"),
            ("grandchild", "base"),
        ]
        assert all(e["data"]["reason"] == "dependency_failed" for e in of(events, "task_skipped"))
        assert not of(events, "task_started", "child") and not of(events, "task_started", "grandchild")
        assert {e["data"]["taskId"] for e in of(events, "task_completed")} == {"other", "other-child"}
        end = end_of(events)
        assert end["type"] == "build_completed" and end["data"]["status"] == "completed_with_errors"
        metrics = end["data"]["metrics"]
        assert (metrics["completedTasks"], metrics["failedTasks"], metrics["skippedTasks"]) == (2, 1, 2)
        view = engine.view(bid)
        assert view["status"] == "completed_with_errors"
        assert task_status(view) == {
            "base": "failed",
            "child": "skipped",
            "grandchild": "skipped",
            "other": "completed",
            "other-child": "completed",
        }

    def test_timeouts_retry_then_succeed_or_fail_for_good(self, engine: Engine) -> None:
        plan = [task("slow-once", target="once.txt"), task("always-slow", target="always.txt")]
        script = {
            "plan": {"tasks": plan},
            "tasks": {"slow-once": {"timeout_attempts": 1}, "always-slow": {"timeout_attempts": 9}},
            **fast(),
        }
        bid = engine.build("timeouts", script)
        events = engine.wait_end(bid)
        check_log(events)
        once = of(events, "task_timeout", "slow-once")
        assert [(e["data"]["attempt"], e["data"]["willRetry"]) for e in once] == [(1, True)]
        assert once[0]["data"]["suggestion"] == "Retry or skip this task"
        assert seq_of(events, "task_completed", "slow-once") > once[0]["seq"]
        always = of(events, "task_timeout", "always-slow")
        assert [(e["data"]["attempt"], e["data"]["willRetry"]) for e in always] == [(1, True), (2, True), (3, False)]
        assert all(e["data"]["suggestion"] == "Retry or skip this task" for e in always)
        assert not of(events, "task_completed", "always-slow")
        assert end_of(events)["data"]["status"] == "completed_with_errors"
        assert task_status(engine.view(bid)) == {"slow-once": "completed", "always-slow": "timeout"}

    # --- cancel and retry --------------------------------------------------------------------------
    def test_cancel_while_executing_starts_nothing_more(self, engine: Engine) -> None:
        plan = [task("first", target="1.txt"), task("second", "first", target="2.txt"), task("third", "second")]
        script = {"plan": {"tasks": plan}, "tasks": {"first": {"delay_ms": 600}}, **fast()}
        bid = engine.build("cancel me", script)
        engine.wait_event(bid, "task_started")
        engine.wait_event(bid, "plan_generated")  # `first` may start while the plan streams
        status, body = engine.api("POST", f"/builds/{bid}/cancel")
        assert status == 202, body
        events = engine.wait_end(bid)
        assert end_of(events)["type"] == "build_cancelled"
        # the running task settles; nothing else starts
        wait_for(lambda: task_status(engine.view(bid))["first"] != "in_progress", what="first to settle")
        engine.wait_idle()
        events = engine.events(bid)
        check_log(events)
        cancelled_at = seq_of(events, "build_cancelled")
        assert not [e for e in of(events, "task_started") if e["seq"] > cancelled_at]
        assert started_order(events) == ["first"]
        view = engine.view(bid)
        assert view["status"] == "cancelled"
        assert task_status(view)["second"] == "cancelled" and task_status(view)["third"] == "cancelled"
        status, body = engine.api("POST", f"/builds/{bid}/cancel")
        assert status == 409 and body["error"]["code"] == "conflict"

    def test_retry_task_reruns_it_and_its_skipped_dependents(self, engine: Engine) -> None:
        plan = [task("base", target="base.txt"), task("child", "base", target="child.txt"), task("other")]
        script = {"plan": {"tasks": plan}, "tasks": {"base": {"fail_attempts": 3}}, **fast()}
        bid = engine.build("retry me", script)
        first = engine.wait_end(bid)
        assert end_of(first)["data"]["status"] == "completed_with_errors"
        assert task_status(engine.view(bid)) == {"base": "failed", "child": "skipped", "other": "completed"}

        status, body = engine.api("POST", f"/builds/{bid}/tasks/other/retry")
        assert status == 409, body  # a completed task does not retry
        status, body = engine.api("POST", f"/builds/{bid}/tasks/child/retry")
        assert status == 409, body  # nor a skipped one whose failed dependency stays failed
        assert engine.view(bid)["status"] == "completed_with_errors"
        status, body = engine.api("POST", f"/builds/{bid}/tasks/base/retry")
        assert status == 202, body

        events = engine.wait_end(bid, ends=2)
        check_log(events)
        again = [e for e in events if e["seq"] > end_of(first)["seq"]]
        assert started_order(again) == ["base", "child"]  # "other" is not re-run
        assert of(again, "task_started", "base")[0]["data"]["attempt"] == 4
        assert {e["data"]["taskId"] for e in of(again, "task_completed")} == {"base", "child"}
        end = end_of(again)
        assert end["type"] == "build_completed" and end["data"]["status"] == "completed"
        assert end["data"]["metrics"]["completedTasks"] == 3
        view = engine.view(bid)
        assert view["status"] == "completed"
        assert set(task_status(view).values()) == {"completed"}
        status, _ = engine.api("POST", f"/builds/{bid}/tasks/base/retry")
        assert status == 409

    # --- budget ------------------------------------------------------------------------------------
    def test_budget_reached_starts_no_new_task(self, engine: Engine) -> None:
        plan = [task(t, target=f"{t}.txt") for t in ("t1", "t2", "t3", "t4")]
        priced = {"usage": {"promptTokens": 1000, "completionTokens": 500, "costUsd": 0.01}}
        bid = engine.build("budget", {"plan": {"tasks": plan}, **fast(**priced)}, budgetUsd=0.015, maxConcurrency=1)
        events = engine.wait_end(bid)
        engine.wait_idle()
        events = engine.events(bid)
        check_log(events)
        end = end_of(events)
        assert end["type"] == "build_failed" and end["data"]["reason"] == "budget_exceeded"
        spent, reached_at = 0.0, None
        for e in of(events, "task_completed"):
            spent += e["data"]["usage"]["costUsd"]
            if spent >= 0.015 and reached_at is None:
                reached_at = e["seq"]
        assert reached_at is not None
        assert not [e for e in of(events, "task_started") if e["seq"] > reached_at]
        assert len(of(events, "task_completed")) == 2
        view = engine.view(bid)
        assert view["status"] == "failed" and view["failureReason"] == "budget_exceeded"
        assert sorted(task_status(view).values()) == ["cancelled", "cancelled", "completed", "completed"]

    # --- approval ----------------------------------------------------------------------------------
    def test_approval_approve(self, engine: Engine) -> None:
        plan = [task("a", target="a.txt"), task("b", "a", target="b.txt")]
        bid = engine.build("approve", {"plan": {"tasks": plan}, **fast()}, requireApproval=True)
        events = engine.wait_event(bid, "plan_approval_required")
        assert events[-1]["data"]["expiresAt"] > events[-1]["timestamp"]
        assert engine.view(bid)["status"] == "awaiting_approval"
        assert not of(events, "task_started")
        required = events[-1]["data"]
        assert (required["taskCount"], required["estimatedDuration"]) == (2, 20.0)
        assert required["approvalUrl"] == f"/builds/{bid}/approval"
        status, body = engine.api("POST", f"/builds/{bid}/approval", {"approved": True})
        assert status == 200, body
        assert body == {"buildId": bid, "approved": True, "planVersion": 1}
        events = engine.wait_end(bid)
        check_log(events)
        assert seq_of(events, "plan_approval_required") < min(e["seq"] for e in of(events, "task_started"))
        [approved] = of(events, "plan_approved")
        plan_id = of(events, "plan_generated")[0]["data"]["planId"]
        assert approved["data"] == {"planId": plan_id, "planVersion": 1, "edited": False}
        assert approved["seq"] < min(e["seq"] for e in of(events, "task_started"))
        assert len(of(events, "plan_generated")) == 1  # no edit: the plan stands as generated
        assert end_of(events)["data"]["status"] == "completed"
        status, body = engine.api("POST", f"/builds/{bid}/approval", {"approved": True})
        assert status == 409

    def test_approval_reject(self, engine: Engine) -> None:
        plan = [task("a", target="a.txt")]
        bid = engine.build("reject", {"plan": {"tasks": plan}, **fast()}, requireApproval=True)
        engine.wait_event(bid, "plan_approval_required")
        status, body = engine.api("POST", f"/builds/{bid}/approval", {"approved": False, "reason": "not this"})
        assert status == 200, body
        events = engine.wait_end(bid)
        check_log(events)
        [rejected] = of(events, "plan_rejected")
        assert rejected["data"] == {"planId": of(events, "plan_generated")[0]["data"]["planId"], "reason": "not this"}
        assert rejected["seq"] < seq_of(events, "build_failed")
        assert end_of(events)["type"] == "build_failed" and end_of(events)["data"]["reason"] == "approval_rejected"
        assert not of(events, "task_started")
        assert engine.view(bid)["status"] == "failed"

    def test_approval_with_an_edited_plan_runs_the_edit(self, engine: Engine) -> None:
        plan = [task("a", target="a.txt"), task("b", "a", target="b.txt")]
        script = {
            "plan": {"tasks": plan},
            **fast(),
            "tasks": {"x": {"files": [{"path": "x.txt", "content": "edited x\n"}]}},
        }
        bid = engine.build("edit", script, requireApproval=True)
        engine.wait_event(bid, "plan_approval_required")
        edited = [task("x", target="x.txt"), task("y", "x", target="y.txt")]
        status, body = engine.api("POST", f"/builds/{bid}/approval", {"approved": True, "tasks": edited})
        assert status == 200, body
        assert body["planVersion"] == 2
        events = engine.wait_end(bid)
        check_log(events)
        first, again = of(events, "plan_generated")
        assert first["data"]["planVersion"] == 1 and [t["id"] for t in first["data"]["tasks"]] == ["a", "b"]
        [approved] = of(events, "plan_approved")
        assert approved["data"] == {"planId": first["data"]["planId"], "planVersion": 2, "edited": True}
        assert approved["seq"] < again["seq"] < min(e["seq"] for e in of(events, "task_started"))
        assert again["data"]["planVersion"] == 2 and again["data"]["taskCount"] == 2
        assert [(t["id"], t["dependsOn"]) for t in again["data"]["tasks"]] == [("x", []), ("y", ["x"])]
        assert engine.view(bid)["planVersion"] == 2
        assert started_order(events) == ["x", "y"]
        assert end_of(events)["data"]["status"] == "completed"
        assert end_of(events)["data"]["metrics"]["totalTasks"] == 2
        view = engine.view(bid)
        assert [t["id"] for t in view["plan"]["tasks"]] == ["x", "y"]
        status, files = engine.api("GET", f"/builds/{bid}/files")
        assert status == 200 and "x.txt" in {f["path"] for f in files}
        status, content = engine.rt.invoke_api("GET", f"/builds/{bid}/files/x.txt", user=USER, raw=True)
        assert status == 200 and content == "edited x\n"

    def test_two_concurrent_approvals_with_different_edits_never_merge(self, engine: Engine) -> None:
        """Exactly one decision wins; the other answers 409 and its edit is not stored."""
        plan = [task("p", target="p.txt")]
        bid = engine.build("two approvers", {"plan": {"tasks": plan}, **fast()}, requireApproval=True)
        engine.wait_event(bid, "plan_approval_required")
        edits = {"x": [task("x", target="x.txt")], "y": [task("y", target="y.txt"), task("z", "y", target="z.txt")]}
        answers: dict[str, tuple[int, Any]] = {}
        gate = threading.Barrier(2)

        def approve(name: str) -> None:
            gate.wait()
            answers[name] = engine.api("POST", f"/builds/{bid}/approval", {"approved": True, "tasks": edits[name]})

        threads = [threading.Thread(target=approve, args=(name,)) for name in edits]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(status for status, _ in answers.values()) == [200, 409], answers
        winner = next(name for name, (status, _) in answers.items() if status == 200)
        events = engine.wait_end(bid)
        check_log(events)
        assert len(of(events, "plan_approved")) == 1
        expected = [t["id"] for t in edits[winner]]
        assert [t["id"] for t in engine.view(bid)["plan"]["tasks"]] == expected
        assert end_of(events)["data"]["metrics"]["totalTasks"] == len(expected)
        assert sorted(started_order(events)) == sorted(expected)

    def test_cancel_while_planning_ends_cleanly(self, engine: Engine, capfd: pytest.CaptureFixture[str]) -> None:
        plan = [task(f"t{i}", target=f"t{i}.txt") for i in range(12)]
        script = {"plan": {"tasks": plan, "chunk_chars": 20, "chunk_delay_ms": 40}, **fast()}
        bid = engine.build("cancel me while I plan", script)
        engine.wait_event(bid, "plan_partial")
        status, body = engine.api("POST", f"/builds/{bid}/cancel")
        assert status == 202, body
        events = engine.wait_end(bid)
        wait_for(lambda: not plan_running(), what="the plan function to return")  # its stream is over
        events = engine.events(bid)
        check_log(events)
        cancelled = seq_of(events, "build_cancelled")
        # Nothing of the plan after the end, and no task starts after it; a task started while the
        # plan streamed (before the cancel) settles, as in a cancel while executing.
        started = {e["data"]["taskId"] for e in of(events, "task_started")}
        after = events[cancelled:]
        assert all(e["type"] in ("task_completed", "task_failed") and e["data"]["taskId"] in started for e in after)
        assert all(e["seq"] < cancelled for e in of(events, "task_started"))
        assert not of(events, "plan_generated")
        assert engine.view(bid)["status"] == "cancelled"
        logged = capfd.readouterr()
        lines = (logged.out + logged.err).splitlines()
        assert not [line for line in lines if bid in line and ('"level":"ERROR"' in line or "Traceback" in line)]
        assert not [line for line in lines if "StateConflict" in line]

    def test_skipping_a_failed_task_lets_its_dependents_run(self, engine: Engine) -> None:
        plan = [
            task("base", target="base.txt"),
            task("child", "base", target="child.txt"),
            task("other", target="other.txt"),
        ]
        bid = engine.build("skip it", {"plan": {"tasks": plan}, "tasks": {"base": {"fail_attempts": 9}}, **fast()})
        first = engine.wait_end(bid)
        assert end_of(first)["data"]["status"] == "completed_with_errors"
        assert engine.api("POST", f"/builds/{bid}/tasks/other/skip")[0] == 409  # completed: nothing to skip
        assert engine.api("POST", f"/builds/{bid}/tasks/nope/skip")[0] == 404
        status, body = engine.api("POST", f"/builds/{bid}/tasks/base/skip")
        assert status == 202, body
        assert (body["status"], body["reopened"], body["buildResumed"]) == ("skipped", ["child"], True)
        events = engine.wait_end(bid, ends=2)
        check_log(events)
        ended = first[-1]["seq"]
        later = [e for e in events if e["seq"] > ended]
        assert [e["type"] for e in later][:2] == ["build_resumed", "task_skipped"]
        assert later[0]["data"]["taskIds"] == ["base", "child"] and later[0]["data"]["runId"].startswith(f"{bid}-run2-")
        assert later[1]["data"] == {"taskId": "base", "reason": "user", "dependency": None}
        assert of(events, "task_completed", "child")
        end = end_of(events)
        assert end["type"] == "build_completed" and end["data"]["status"] == "completed_with_errors"
        view = engine.view(bid)
        by_id = {t["id"]: t for t in view["plan"]["tasks"]}
        assert (by_id["base"]["status"], by_id["base"]["skipReason"]) == ("skipped", "user")
        assert by_id["child"]["status"] == "completed" and view["status"] == "completed_with_errors"
        assert engine.api("POST", f"/builds/{bid}/tasks/base/skip")[0] == 409  # skipped already

    # --- plan validation ---------------------------------------------------------------------------
    def test_malformed_task_healed_once_and_unhealable_task_dropped(self, engine: Engine) -> None:
        text = (
            '{"tasks": [\n'
            '  {"id": "good", "type": "create_file", "name": "Good", "input": {"targetPath": "good.txt"}},\n'
            '  {"id": "broken", "type": "create_file", "name": "Broken" "input": {"targetPath": "broken.txt"}},\n'
            '  {"id": "hopeless", "type": "no_such_type", "name": "Hopeless"}\n'
            "]}"
        )
        healed = {"id": "broken", "type": "create_file", "name": "Broken", "input": {"targetPath": "broken.txt"}}
        script = {"plan": {"text": text}, "heal": [healed, "sorry, I cannot"], **fast()}
        bid = engine.build("malformed plan", script)
        events = engine.wait_end(bid)
        check_log(events)
        warnings = of(events, "plan_warning")
        assert len(warnings) == 1 and "hopeless" in warnings[0]["data"]["message"]
        assert [t["id"] for t in of(events, "plan_generated")[0]["data"]["tasks"]] == ["good", "broken"]
        assert {e["data"]["taskId"] for e in of(events, "task_completed")} == {"good", "broken"}
        assert end_of(events)["data"]["status"] == "completed"

    # --- cache -------------------------------------------------------------------------------------
    def test_identical_rebuild_is_served_from_the_cache(self, engine: Engine) -> None:
        plan = [task("a", target="a.txt"), task("b", "a", target="b.txt"), task("c", target="c.txt")]
        script = {"plan": {"tasks": plan}, **fast(usage={"promptTokens": 100, "completionTokens": 50})}
        first = engine.build("cache me", script)
        one = engine.wait_end(first)
        assert all(not e["data"]["cached"] for e in of(one, "task_completed"))
        assert all(e["data"]["usage"]["promptTokens"] == 100 for e in of(one, "task_completed"))
        second = engine.build("cache me", script)
        two = engine.wait_end(second)
        check_log(two)
        done = of(two, "task_completed")
        assert len(done) == 3
        for e in done:
            assert e["data"]["cached"] is True
            assert (e["data"]["usage"]["promptTokens"], e["data"]["usage"]["completionTokens"]) == (0, 0)
        metrics = end_of(two)["data"]["metrics"]
        assert metrics["cachedTasks"] == metrics["totalTasks"] == 3
        assert end_of(two)["data"]["files"] == end_of(one)["data"]["files"]
        _, files_one = engine.api("GET", f"/builds/{first}/files")
        _, files_two = engine.api("GET", f"/builds/{second}/files")
        assert [(f["path"], f["sha256"]) for f in files_one] == [(f["path"], f["sha256"]) for f in files_two]

    # --- scheduling --------------------------------------------------------------------------------
    def test_max_concurrency_is_never_exceeded(self, engine: Engine) -> None:
        plan = [task(f"t{i}", target=f"t{i}.txt") for i in range(6)]
        bid = engine.build("window", {"plan": {"tasks": plan}, **fast(delay_ms=150)}, maxConcurrency=2)
        events = engine.wait_end(bid)
        check_log(events)
        assert len(of(events, "task_completed")) == 6
        assert max_in_flight(events) == 2

    def test_longest_remaining_path_starts_first(self, engine: Engine) -> None:
        plan = [
            task("short-late", duration=1, priority=5, target="s1.txt"),
            task("short-early", duration=1, priority=1, target="s2.txt"),
            task("long", duration=5, target="l1.txt"),
            task("long-next", "long", duration=5, target="l2.txt"),
        ]
        # Among the tasks known: while the plan streams, a task may start before a longer one arrives.
        with planning_first():
            bid = engine.build("critical path", {"plan": {"tasks": plan}, **fast()}, maxConcurrency=1)
            events = engine.wait_end(bid)
        check_log(events)
        # remaining path: long 10, long-next 5, then equal 1s by priority (lower first)
        assert started_order(events) == ["long", "long-next", "short-early", "short-late"]

    def test_tasks_writing_the_same_path_never_overlap(self, engine: Engine) -> None:
        plan = [task("w1", target="shared.txt"), task("w2", target="shared.txt"), task("w3", target="other.txt")]
        script = {
            "plan": {"tasks": plan},
            **fast(delay_ms=150),
            "tasks": {
                "w1": {"files": [{"path": "shared.txt", "content": "one\n"}]},
                "w2": {"files": [{"path": "shared.txt", "content": "two\n"}]},
            },
        }
        bid = engine.build("same path", script, maxConcurrency=5)
        events = engine.wait_end(bid)
        check_log(events)
        assert seq_of(events, "task_completed", "w1") < seq_of(events, "task_started", "w2")
        deps = {t["id"]: t["dependsOn"] for t in of(events, "plan_generated")[0]["data"]["tasks"]}
        assert deps == {"w1": [], "w2": ["w1"], "w3": []}
        assert seq_of(events, "task_started", "w3") < seq_of(events, "task_completed", "w1")  # others go on
        status, content = engine.rt.invoke_api("GET", f"/builds/{bid}/files/shared.txt", user=USER, raw=True)
        assert status == 200 and content == "two\n"


# ==================================================================================================
class TestNoLinearFallbackSlowRetries:
    """ALLOW_LINEAR_FALLBACK=false: a cycle nothing fixes blocks (approval) or fails (no approval).
    Retries wait about a second (TASK_RETRY_BASE_SECONDS=1)."""

    ENV = {"ALLOW_LINEAR_FALLBACK": "false", "TASK_RETRY_BASE_SECONDS": "1"}

    def test_rung_d_blocks_until_an_acyclic_edit_is_approved(self, engine: Engine) -> None:
        script = {"plan": {"tasks": cyclic_pair()}, "heal": [STILL_CYCLIC], **fast()}
        bid = engine.build("rung D", script, requireApproval=True)
        events = engine.wait_event(bid, "plan_approval_required")
        blocked = of(events, "plan_blocked")
        assert len(blocked) == 1
        assert blocked[0]["data"]["reason"] == "circular_dependencies"
        assert blocked[0]["data"]["cycles"] == ["a → b → a"]
        assert not of(events, "plan_generated") and not of(events, "plan_warning")
        assert engine.view(bid)["status"] == "awaiting_approval"

        status, body = engine.api("POST", f"/builds/{bid}/approval", {"approved": True})
        assert status == 422 and "tasks" in json.dumps(body["error"])
        still = [task("a", "b", target="a.txt"), task("b", "a", target="b.txt")]
        status, body = engine.api("POST", f"/builds/{bid}/approval", {"approved": True, "tasks": still})
        assert status == 422, body
        assert [d["field"] for d in body["error"]["details"]] == ["tasks"]
        assert engine.view(bid)["status"] == "awaiting_approval"

        fixed = [task("a", target="a.txt"), task("b", "a", target="b.txt")]
        status, body = engine.api("POST", f"/builds/{bid}/approval", {"approved": True, "tasks": fixed})
        assert status == 200, body
        events = engine.wait_end(bid)
        check_log(events)
        assert started_order(events) == ["a", "b"]
        assert seq_of(events, "task_completed", "a") < seq_of(events, "task_started", "b")
        assert end_of(events)["type"] == "build_completed" and end_of(events)["data"]["status"] == "completed"

    def test_rung_e_fails_the_build_without_approval(self, engine: Engine) -> None:
        script = {"plan": {"tasks": cyclic_pair()}, "heal": [STILL_CYCLIC], **fast()}
        bid = engine.build("rung E", script, requireApproval=False)
        events = engine.wait_end(bid)
        check_log(events)
        end = end_of(events)
        assert end["type"] == "build_failed" and end["data"]["reason"] == "circular_dependencies"
        assert "a → b → a" in end["data"]["message"]
        assert not of(events, "plan_generated") and not of(events, "task_started")
        assert engine.view(bid)["status"] == "failed"

    def test_a_retry_due_after_the_budget_is_reached_never_starts(self, engine: Engine) -> None:
        plan = [task("flaky", target="flaky.txt"), task("pricey", target="pricey.txt")]
        script = {
            "plan": {"tasks": plan},
            **fast(),
            "tasks": {
                "flaky": {"fail_attempts": 1},
                "pricey": {"usage": {"promptTokens": 10, "completionTokens": 10, "costUsd": 0.02}},
            },
        }
        bid = engine.build("late retry", script, budgetUsd=0.01, maxConcurrency=2)
        events = engine.wait_end(bid)
        check_log(events)
        assert [(e["data"]["attempt"], e["data"]["willRetry"]) for e in of(events, "task_failed", "flaky")] == [
            (1, True)
        ]
        reached_at = seq_of(events, "task_completed", "pricey")
        assert not [e for e in of(events, "task_started") if e["seq"] > reached_at]
        assert end_of(events)["type"] == "build_failed" and end_of(events)["data"]["reason"] == "budget_exceeded"
        assert task_status(engine.view(bid)) == {"flaky": "cancelled", "pricey": "completed"}


# ==================================================================================================
class TestShortTimeouts:
    """A 6 s build time limit (and a long approval window)."""

    ENV = {"BUILD_TIMEOUT_SECONDS": "6", "PLAN_APPROVAL_TIMEOUT_SECONDS": "30"}

    def test_build_timeout_ends_the_build_and_starts_nothing_more(self, engine: Engine) -> None:
        plan = [task(f"s{i}", *([f"s{i - 1}"] if i else []), target=f"s{i}.txt") for i in range(8)]
        bid = engine.build("too slow", {"plan": {"tasks": plan}, **fast(delay_ms=1000)})
        events = engine.wait_end(bid)
        end = end_of(events)
        assert end["type"] == "build_failed" and end["data"]["reason"] == "timed_out"
        # the task in flight settles and its events land; nothing starts after the end
        wait_for(lambda: "in_progress" not in task_status(engine.view(bid)).values(), what="in-flight task to settle")
        engine.wait_idle()
        events = engine.events(bid)
        check_log(events)
        ended_at = seq_of(events, "build_failed")
        assert not [e for e in of(events, "task_started") if e["seq"] > ended_at]
        assert not of(events, "build_completed")
        view = engine.view(bid)
        assert view["status"] == "timed_out"
        assert "cancelled" in task_status(view).values()

        # the build can still be completed: retrying re-opens the tasks the halt cancelled with it
        engine.use_script({"plan": {"tasks": plan}, **fast()})
        cancelled = sorted(t for t, s in task_status(view).items() if s == "cancelled")
        status, body = engine.api("POST", f"/builds/{bid}/tasks/{cancelled[0]}/retry")
        assert status == 202, body
        assert body["buildResumed"] is True and set(body["reopened"]) == set(cancelled)
        events = engine.wait_end(bid, ends=2)
        check_log(events)
        [resumed] = of(events, "build_resumed")
        assert resumed["seq"] > ended_at and set(resumed["data"]["taskIds"]) == set(cancelled)
        end = end_of(events)
        assert end["type"] == "build_completed" and end["data"]["status"] == "completed", end
        assert set(task_status(engine.view(bid)).values()) == {"completed"}

    def test_waiting_for_approval_does_not_count_toward_the_build_time_limit(self, engine: Engine) -> None:
        plan = [task("only", target="only.txt")]
        bid = engine.build("slow approver", {"plan": {"tasks": plan}, **fast(delay_ms=1200)}, requireApproval=True)
        engine.wait_event(bid, "plan_approval_required")
        assert engine.clock is not None
        engine.clock.advance(5.0)  # most of the build's 6 s goes by before a human approves
        status, body = engine.api("POST", f"/builds/{bid}/approval", {"approved": True})
        assert status == 200, body
        events = engine.wait_end(bid)
        check_log(events)
        end = end_of(events)
        assert end["type"] == "build_completed", f"{end['type']} {end['data']}"
        assert end["data"]["status"] == "completed"

    def test_a_retried_run_gets_its_own_time_limit(self, engine: Engine) -> None:
        plan = [task("base", target="base.txt"), task("child", "base", target="child.txt")]
        script = {
            "plan": {"tasks": plan},
            **fast(),
            "tasks": {"base": {"fail_attempts": 3}, "child": {"delay_ms": 1500}},
        }
        bid = engine.build("retry late", script)
        first = engine.wait_end(bid)
        assert end_of(first)["data"]["status"] == "completed_with_errors"
        created_s = first[0]["timestamp"] / 1000
        assert engine.clock is not None
        engine.clock.advance(created_s + 6.3 - engine.clock.time())  # the first run's time limit is long gone
        status, body = engine.api("POST", f"/builds/{bid}/tasks/base/retry")
        assert status == 202, body
        events = engine.wait_end(bid, ends=2)
        check_log(events)
        assert end_of(events)["type"] == "build_completed", end_of(events)
        assert end_of(events)["data"]["status"] == "completed"
        assert task_status(engine.view(bid)) == {"base": "completed", "child": "completed"}


# ==================================================================================================
class TestApprovalWindow:
    """PLAN_APPROVAL_TIMEOUT_SECONDS=1."""

    ENV = {"PLAN_APPROVAL_TIMEOUT_SECONDS": "1"}

    def test_approval_timeout_fails_the_build(self, engine: Engine) -> None:
        bid = engine.build("nobody approves", {"plan": {"tasks": [task("a")]}, **fast()}, requireApproval=True)
        events = engine.wait_end(bid)
        check_log(events)
        assert of(events, "plan_approval_required")
        assert end_of(events)["type"] == "build_failed" and end_of(events)["data"]["reason"] == "approval_timeout"
        assert not of(events, "task_started")
        assert engine.view(bid)["status"] == "failed"
        status, _ = engine.api("POST", f"/builds/{bid}/approval", {"approved": True})
        assert status == 409
