"""What a build costs when a provider misbehaves: every billed attempt counts — toward the task's
cost, the build's `costUsd` and its `budgetUsd` — failed and timed-out ones included.

Scripted mock (each attempt of a task is billed its scripted `usage.costUsd`) through the real local
runtime; the recorded-provider test shows the same through the Anthropic wire format.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from local.runtime import LocalRuntime
from tests.e2e.test_engine import Engine, check_log, end_of, fast, of
from tests.helpers import task

pytestmark = pytest.mark.e2e

ATTEMPT_COST = 0.01
PRICED = {"usage": {"promptTokens": 1000, "completionTokens": 500, "costUsd": ATTEMPT_COST}}


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    script = tmp_path_factory.mktemp("costs") / "script.json"
    script.write_text("{}")
    # A short task time limit, so a timed-out attempt ends at once.
    env = {"TASK_RETRY_BASE_SECONDS": "0", "TASK_MAX_ATTEMPTS": "3", "TASK_TIMEOUT_SECONDS": "2",
           "STEPWISE_MOCK_SCRIPT": str(script)}
    with LocalRuntime(env=env) as rt:
        yield Engine(rt, script)


class TestCosts:
    def test_attempts_that_fail_twice_then_succeed_are_all_billed(self, engine: Engine) -> None:
        script = {"plan": {"tasks": [task("flaky", target="flaky.txt")]}, "tasks": {"flaky": {"fail_attempts": 2}}}
        bid = engine.build("costs: fails twice", {**script, **fast(**PRICED)})
        events = engine.wait_end(bid)
        check_log(events)
        assert [e["data"]["attempt"] for e in of(events, "task_failed", "flaky")] == [1, 2]
        [done] = of(events, "task_completed", "flaky")
        assert done["data"]["usage"]["costUsd"] == pytest.approx(3 * ATTEMPT_COST)
        assert done["data"]["usage"]["promptTokens"] == 3 * 1000
        end = end_of(events)
        assert end["type"] == "build_completed"
        assert end["data"]["metrics"]["costUsd"] == pytest.approx(3 * ATTEMPT_COST)
        assert end["data"]["metrics"]["planCostUsd"] == 0.0  # the mock model plans for free
        assert engine.view(bid)["metrics"]["costUsd"] == pytest.approx(3 * ATTEMPT_COST)

    def test_the_budget_counts_the_failed_attempts(self, engine: Engine) -> None:
        # One successful attempt (0.01) is under the budget; the three it took (0.03) are not.
        plan = [task("flaky", target="flaky.txt"), task("after", "flaky", target="after.txt")]
        script = {"plan": {"tasks": plan}, "tasks": {"flaky": {"fail_attempts": 2}}, **fast(**PRICED)}
        bid = engine.build("costs: budget", script, budgetUsd=0.025)
        events = engine.wait_end(bid)
        engine.wait_idle()  # nothing may start after the end either
        events = engine.events(bid)
        end = end_of(events)
        assert end["type"] == "build_failed" and end["data"]["reason"] == "budget_exceeded", end
        assert not of(events, "task_started", "after")
        view = engine.view(bid)
        assert view["metrics"]["costUsd"] == pytest.approx(3 * ATTEMPT_COST)

    def test_a_timed_out_attempt_is_billed_too(self, engine: Engine) -> None:
        script = {"plan": {"tasks": [task("slow", target="slow.txt")]}, "tasks": {"slow": {"timeout_attempts": 1}}}
        bid = engine.build("costs: times out once", {**script, **fast(**PRICED)})
        events = engine.wait_end(bid)
        assert [e["data"]["attempt"] for e in of(events, "task_timeout", "slow")] == [1]
        [done] = of(events, "task_completed", "slow")
        assert done["data"]["usage"]["costUsd"] == pytest.approx(2 * ATTEMPT_COST)
        assert end_of(events)["data"]["metrics"]["costUsd"] == pytest.approx(2 * ATTEMPT_COST)

    def test_a_task_failing_for_good_still_counts_its_cost(self, engine: Engine) -> None:
        script = {"plan": {"tasks": [task("broken", target="b.txt")]}, "tasks": {"broken": {"fail_attempts": 9}}}
        bid = engine.build("costs: fails for good", {**script, **fast(**PRICED)})
        events = engine.wait_end(bid)
        end = end_of(events)
        assert end["data"]["status"] == "completed_with_errors"
        assert end["data"]["metrics"]["costUsd"] == pytest.approx(3 * ATTEMPT_COST)
        assert 3 * 1000 <= end["data"]["metrics"]["promptTokens"] < 3 * 1000 + 100  # and the plan's few
