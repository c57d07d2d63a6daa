"""Streaming execution end to end (STREAM_EXECUTION, on by default): a task starts while the plan
still streams, as soon as its JSON has closed and its dependencies have completed, through the real
local runtime (the ASL state machine, the plan step, the dispatcher, the task consumer).

The plans stream slowly (40-character chunks every 15 ms) so that the plan is still being written
while its first tasks run; what is asserted is the order of the event log, never a time."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.e2e import test_engine
from tests.e2e.test_engine import (
    USER,
    Engine,
    check_log,
    end_of,
    max_in_flight,
    of,
    planning_first,
    seq_of,
    started_order,
    task_status,
)
from tests.helpers import task

pytestmark = pytest.mark.e2e
engine = test_engine.engine  # one runtime for the class, as in test_engine


def slow(plan: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {"plan": {"tasks": plan, "chunk_chars": 40, "chunk_delay_ms": 15}, "default_task": {"delay_ms": 0}, **extra}


def filler(n: int) -> list[dict[str, Any]]:
    """Tasks that keep the plan streaming after the interesting ones (each about 6 chunks)."""
    return [task(f"later{i}", "root", target=f"later{i}.txt") for i in range(n)]


def started_before_plan(events: list[dict[str, Any]]) -> set[str]:
    generated = seq_of(events, "plan_generated")
    return {e["data"]["taskId"] for e in of(events, "task_started") if e["seq"] < generated}


class TestStreamingExecution:
    def test_a_root_starts_and_writes_its_file_before_the_plan_is_stored(self, engine: Engine) -> None:
        plan = [task("root", target="root.txt"), task("flaky", target="flaky.txt"), task("third", target="third.txt"),
                *filler(6)]
        script = slow(plan, tasks={"flaky": {"fail_attempts": 1}, "third": {"delay_ms": 150}})
        bid = engine.build("streaming: root first", script, maxConcurrency=2)
        events = engine.wait_end(bid)
        check_log(events)
        generated = seq_of(events, "plan_generated")
        first_partial = of(events, "plan_partial")[0]["seq"]
        assert first_partial < seq_of(events, "task_started", "root") < generated
        assert seq_of(events, "task_completed", "root") < generated  # its file exists before the plan does
        status, content = engine.rt.invoke_api("GET", f"/builds/{bid}/files/root.txt", user=USER, raw=True)
        assert status == 200 and content
        # retries and the window hold from the first started task
        assert [e["data"]["willRetry"] for e in of(events, "task_failed", "flaky")] == [True]
        assert max_in_flight(events) <= 2
        assert sorted(started_order(events)) == sorted([t["id"] for t in plan] + ["flaky"])  # flaky twice
        assert len(of(events, "task_completed")) == len(plan)
        assert end_of(events)["type"] == "build_completed" and end_of(events)["data"]["status"] == "completed"
        assert set(task_status(engine.view(bid)).values()) == {"completed"}

    def test_a_task_naming_a_later_task_waits_for_it(self, engine: Engine) -> None:
        plan = [task("c", "d", target="c.txt"), task("e", "c", target="e.txt"), task("d", target="d.txt"),
                task("root", target="root.txt"), *filler(2)]
        bid = engine.build("streaming: forward dependency", slow(plan))
        events = engine.wait_end(bid)
        check_log(events)
        assert seq_of(events, "task_completed", "d") < seq_of(events, "task_started", "c")
        assert seq_of(events, "task_completed", "c") < seq_of(events, "task_started", "e")
        assert sorted(started_order(events)) == sorted(t["id"] for t in plan)  # each exactly once
        assert {"d", "root"} <= started_before_plan(events)
        assert end_of(events)["data"]["status"] == "completed"
        # handed in another order than the plan's, the tasks are listed in the plan's once it is stored
        assert [t["id"] for t in engine.view(bid)["plan"]["tasks"]] == [t["id"] for t in plan]

    def test_a_cycle_among_unstarted_tasks_goes_down_the_ladder_and_the_started_stay_as_they_ran(
        self, engine: Engine
    ) -> None:
        still_cyclic = {"tasks": [{"id": "a", "dependencies": ["b"]}, {"id": "b", "dependencies": ["a"]}]}
        plan = [task("c", target="c.txt"), task("d", "c", target="d.txt"), task("a", "b", target="a.txt"),
                task("b", "a", target="b.txt"), task("x", target="x.txt")]
        script = slow(plan, heal=[still_cyclic], tasks={"d": {"delay_ms": 100}})
        bid = engine.build("streaming: ladder", script)
        events = engine.wait_end(bid)
        check_log(events)
        assert {"c", "d"} <= started_before_plan(events)
        generated = of(events, "plan_generated")[0]["data"]
        assert generated["recovery"] == "linear-fallback"  # rungs B (declined) then C, for a and b only
        deps = {t["id"]: t["dependsOn"] for t in generated["tasks"]}
        assert deps["c"] == [] and deps["d"] == ["c"]  # the started tasks keep what they ran with
        started = started_order(events)
        assert sorted(started) == sorted(t["id"] for t in plan)  # each exactly once: nothing undone
        handed = [t for t in started if t not in ("a", "b")]
        last_handed = max(seq_of(events, "task_completed", t) for t in handed)
        assert last_handed < seq_of(events, "task_started", "a")  # one by one, after the started ones
        assert seq_of(events, "task_completed", "a") < seq_of(events, "task_started", "b")
        assert end_of(events)["data"]["status"] == "completed"

    def test_a_plan_failing_after_tasks_started_ends_failed_once_they_finished(
        self, engine: Engine, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        from shared.logic.services import reset_services
        from shared.settings import reset_settings

        plan = [task("root", target="root.txt"), task("next", "root", target="next.txt"), task("x", target="x.txt"),
                task("y", target="y.txt")]
        engine.use_script(slow(plan, tasks={"root": {"delay_ms": 300}}))
        monkeypatch.setenv("MAX_PLAN_TASKS", "3")  # the 4th task makes the plan fail for good
        reset_settings()
        reset_services()
        try:
            status, created = engine.api("POST", "/builds", {"prompt": "streaming: plan fails late"})
            assert status == 202
            bid = created["buildId"]
            events = engine.wait_end(bid)
        finally:
            monkeypatch.delenv("MAX_PLAN_TASKS")
            reset_settings()
            reset_services()
        check_log(events)
        end = end_of(events)
        assert end["type"] == "build_failed" and end["data"]["reason"] == "plan_too_large"
        assert "MAX_PLAN_TASKS=3" in end["data"]["message"]  # the planning reason, in its words
        assert end is events[-1]  # after every started task has finished
        assert not of(events, "plan_generated")
        ran = {e["data"]["taskId"] for e in of(events, "task_started")}
        assert "root" in ran and "y" not in ran
        assert {e["data"]["taskId"] for e in of(events, "task_completed")} == ran  # they finished
        status, content = engine.rt.invoke_api("GET", f"/builds/{bid}/files/root.txt", user=USER, raw=True)
        assert status == 200 and content  # and keep their files
        view = engine.view(bid)
        assert view["status"] == "failed"
        status, body = engine.api("POST", f"/builds/{bid}/tasks/root/retry")
        assert status == 409, body

    def test_a_plan_step_crashing_after_tasks_started_ends_failed_once_they_finished(
        self, engine: Engine, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        from shared.logic import planning

        def crash(*args: Any, **kwargs: Any) -> Any:
            raise RuntimeError("plan worker lost its mind")  # not a StepwiseError: the Lambda fails

        monkeypatch.setattr(planning, "validate_plan", crash)  # after the whole plan streamed
        plan = [task("root", target="root.txt"), task("next", "root", target="next.txt"), *filler(2)]
        bid = engine.build("streaming: plan step crashes", slow(plan, tasks={"root": {"delay_ms": 1200}}))
        events = engine.wait_end(bid)
        check_log(events)
        end = end_of(events)
        assert end["type"] == "build_failed" and end["data"]["reason"] == "planning_failed"
        assert "plan worker lost its mind" in end["data"]["message"]
        assert "root" in started_order(events) and "next" not in started_order(events)
        assert seq_of(events, "task_completed", "root") < end["seq"]  # it finished first
        status, content = engine.rt.invoke_api("GET", f"/builds/{bid}/files/root.txt", user=USER, raw=True)
        assert status == 200 and content  # and kept its file
        assert engine.view(bid)["status"] == "failed"
        again = engine.events(bid)
        assert again[-1]["seq"] == end["seq"]  # nothing came after the terminal event

    def test_a_plan_step_crashing_before_anything_streamed_ends_failed(
        self, engine: Engine, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        from shared.logic import planning

        def crash(*args: Any, **kwargs: Any) -> Any:
            raise RuntimeError("no plan at all")

        monkeypatch.setattr(planning, "_input_files", crash)  # before the provider is called
        bid = engine.build("streaming: plan step crashes first", slow([task("root", target="root.txt")]))
        events = engine.wait_end(bid)
        check_log(events)
        end = end_of(events)
        assert end is events[-1] and end["type"] == "build_failed"
        assert end["data"]["reason"] == "planning_failed" and "no plan at all" in end["data"]["message"]
        assert not of(events, "task_started")

    def test_with_streaming_off_a_plan_step_crash_ends_failed_as_before(
        self, engine: Engine, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        from shared.logic import planning

        def crash(*args: Any, **kwargs: Any) -> Any:
            raise RuntimeError("plan worker crashed")

        monkeypatch.setattr(planning, "validate_plan", crash)
        with planning_first():
            bid = engine.build("plan step crashes, streaming off", slow([task("root", target="root.txt")]))
            events = engine.wait_end(bid)
        check_log(events)
        end = end_of(events)
        assert end is events[-1] and end["type"] == "build_failed"
        assert end["data"]["reason"] == "planning_failed" and "plan worker crashed" in end["data"]["message"]
        assert not of(events, "task_started")
        assert engine.view(bid)["status"] == "failed"

    def test_a_send_the_queue_refuses_while_the_plan_streams_is_sent_again(
        self, engine: Engine, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        from shared.logic.readiness import dispatch_state

        original, failed = dispatch_state.send_batch, []

        def fails_once(url: str, entries: list[dict[str, Any]]) -> None:
            if not failed and any(json.loads(e["MessageBody"])["taskId"] == "refused" for e in entries):
                failed.append(url)
                raise RuntimeError("SQS refused the send")
            original(url, entries)

        monkeypatch.setattr(dispatch_state, "send_batch", fails_once)
        plan = [task("refused", target="a.txt"), task("after", "refused", target="b.txt"), task("x", target="x.txt")]
        bid = engine.build("streaming: send refused", slow(plan))
        events = engine.wait_end(bid)
        check_log(events)
        assert failed
        assert sorted(started_order(events)) == ["after", "refused", "x"]  # each started once
        assert end_of(events)["data"]["status"] == "completed"

    def test_nothing_starts_before_a_required_approval(self, engine: Engine) -> None:
        plan = [task("root", target="root.txt"), *filler(2)]
        bid = engine.build("streaming: approval", slow(plan), requireApproval=True)
        events = engine.wait_event(bid, "plan_approval_required")
        assert not of(events, "task_started")
        status, body = engine.api("POST", f"/builds/{bid}/approval", {"approved": True})
        assert status == 200, body
        events = engine.wait_end(bid)
        check_log(events)
        assert seq_of(events, "plan_approved") < min(e["seq"] for e in of(events, "task_started"))
        assert end_of(events)["data"]["status"] == "completed"

    def test_a_cancel_while_the_plan_streams_stops_what_has_not_started(self, engine: Engine) -> None:
        plan = [task("root", target="root.txt"), *filler(12)]
        bid = engine.build("streaming: cancel", slow(plan, tasks={"root": {"delay_ms": 400}}))
        engine.wait_event(bid, "task_started")
        status, body = engine.api("POST", f"/builds/{bid}/cancel", {})
        assert status in (200, 202), body
        events = engine.wait_end(bid)
        check_log(events)
        cancelled = seq_of(events, "build_cancelled")
        assert not [e for e in of(events, "task_started") if e["seq"] > cancelled]
        assert not of(events, "plan_generated")
