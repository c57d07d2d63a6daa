"""The handoff (shared.logic.readiness.handoff) on moto: a task's completion takes the dispatcher's step and
starts a released dependent in the same commit; nothing is lost when its consumer dies.

The handlers are fed by hand (no pollers), so each test sees exactly what was committed and queued.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from aws_lambda_powertools.utilities.batch.exceptions import BatchProcessingError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from functions.dispatch.handler import StepInterrupted
from local.runtime import load_handler
from shared.dal.aws import client
from shared.dal.table import Update
from shared.ids import now_ms
from shared.logic.attempts import attempt
from shared.logic.readiness import dispatch_state, dispatching, handoff
from shared.logic.services import services
from shared.models.messages import parse_task_message
from shared.models.plan import Task
from tests.helpers import drain_queue, sqs_event, sqs_record, task
from tests.integration.quiet import QuietRuntime, execute, executing, lambda_context, new_build


@pytest.fixture(scope="module")
def quiet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[QuietRuntime]:
    script = tmp_path_factory.mktemp("script") / "mock.json"
    flaky = {"fail_attempts": 1}  # the property test's t0 (a root), t2 and t5 fail once, then succeed
    script.write_text(json.dumps({"default_task": {"delay_ms": 0}, "tasks": {"t0": flaky, "t2": flaky, "t5": flaky}}))
    env = {"STEPWISE_MOCK_SCRIPT": str(script), "TASK_MAX_ATTEMPTS": "2", "TASK_RETRY_BASE_SECONDS": "0"}
    with QuietRuntime(env=env) as runtime:
        yield runtime


def _queued(quiet: QuietRuntime) -> list[dict[str, Any]]:
    return sorted(drain_queue(client("sqs"), quiet.resources.queues["tasks"]), key=lambda m: m["taskId"])


def _finished(quiet: QuietRuntime) -> list[dict[str, Any]]:
    return drain_queue(client("sqs"), quiet.resources.queues["task-finished.fifo"])


def _run(quiet: QuietRuntime, body: dict[str, Any], *, receive_count: int = 1, timeout_s: float | None = None) -> dict:
    record = sqs_record(body, quiet.resources.queue_arns["tasks"], receive_count=receive_count)
    return load_handler("task")(sqs_event([record]), lambda_context("task", timeout_s))  # type: ignore[no-any-return]


def _comes_back(quiet: QuietRuntime, body: dict[str, Any], *, receive_count: int = 1) -> None:
    """The invocation fails its only record: Lambda leaves the message on the queue for later."""
    with pytest.raises(BatchProcessingError):
        _run(quiet, body, receive_count=receive_count)


def _worker_dies_on(monkeypatch: pytest.MonkeyPatch, task_id: str) -> None:
    """Running `task_id` kills its consumer (an error no step catches), until `monkeypatch.undo()`."""
    original = attempt.call_provider

    def dies(svc: Any, t: Task, *args: Any) -> Any:
        if t.id == task_id:
            raise RuntimeError("the worker died")
        return original(svc, t, *args)

    monkeypatch.setattr(attempt, "call_provider", dies)


def _events(build_id: str) -> list[Any]:
    return services().events.read(build_id, after=0, limit=1000)[0]


def _status(build_id: str) -> dict[str, str]:
    return {t.taskId: t.status for t in services().tasks.list(build_id)}


def test_a_dependent_starts_in_the_commit_that_completes_its_last_parent(quiet: QuietRuntime) -> None:
    build_id = executing(quiet, [task("a"), task("b", "a"), task("c", "b")])
    [root] = _queued(quiet)
    _finished(quiet)
    assert _run(quiet, root) == {"batchItemFailures": []}
    events = [(e.seq, e.type.value, e.data.get("taskId"), e.timestamp) for e in _events(build_id)]
    assert [(t, i) for _, t, i, _ in events] == [
        ("task_started", "a"), ("task_completed", "a"),
        ("task_started", "b"), ("task_completed", "b"),
        ("task_started", "c"), ("task_completed", "c"),
    ]
    # each dependent's start is the next event after its parent's completion, in the same commit
    assert events[2][0] == events[1][0] + 1 and events[2][3] == events[1][3]
    assert events[4][0] == events[3][0] + 1 and events[4][3] == events[3][3]
    assert _status(build_id) == {"a": "completed", "b": "completed", "c": "completed"}
    assert _queued(quiet) == []  # no queue hop
    # only the build's last task goes through the dispatcher, which ends the execution
    assert [m["taskId"] for m in _finished(quiet)] == ["c"]
    state = json.loads(services().builds.get(build_id).dispatch)
    assert state["done"] == [0, 1] and state["running"] == [[2, 1]]  # tasks by their index in the plan


def test_a_fan_out_starts_in_the_completing_commit_and_runs_side_by_side(quiet: QuietRuntime) -> None:
    build_id = executing(quiet, [task("a"), task("b", "a", duration=30), task("c", "a"), task("d", "a"),
                                  task("e", "b", "c", "d")])
    [root] = _queued(quiet)
    assert _run(quiet, root) == {"batchItemFailures": []}
    events = _events(build_id)
    done_a = next(e for e in events if e.type.value == "task_completed" and e.data["taskId"] == "a")
    fan = [e for e in events if e.type.value == "task_started" and e.data["taskId"] in "bcd"]
    # b (longest remaining path) first, then plan order; all in a's commit: the next seqs, same time
    assert [e.data["taskId"] for e in fan] == ["b", "c", "d"]
    assert [e.seq for e in fan] == [done_a.seq + 1, done_a.seq + 2, done_a.seq + 3]
    assert {e.timestamp for e in fan} == {done_a.timestamp}
    # they ran in this invocation, side by side, and the last of them handed over the fan-in
    assert _status(build_id) == dict.fromkeys("abcde", "completed")
    started = [e.data["taskId"] for e in events if e.type.value == "task_started"]
    assert sorted(started) == ["a", "b", "c", "d", "e"]
    assert _queued(quiet) == []


def test_a_fan_out_reads_its_dependents_contexts_and_cache_items_in_one_request(quiet: QuietRuntime) -> None:
    """The dependents handed together have their contexts read together: one BatchGetItem for the
    three of them (each still sees its parent's file and is looked up in the cache)."""
    import botocore.client

    build_id = executing(quiet, [task("a", target="src/a.ts"), task("b", "a", target="src/b.ts"),
                                  task("c", "a", target="src/c.ts"), task("d", "a", target="src/d.ts")])
    [root] = _queued(quiet)
    reads: list[dict[str, Any]] = []
    seen: dict[str, list[str]] = {}
    original = botocore.client.BaseClient._make_api_call
    transform = type(services().provider).transform

    def counted(client_: Any, operation: str, params: dict[str, Any]) -> Any:
        if operation in ("BatchGetItem", "GetItem"):
            reads.append(params)
        return original(client_, operation, params)

    def watched(provider: Any, kind: Any, payload: dict[str, Any], context: Any) -> Any:
        seen[context.task_id] = sorted(context.files)
        return transform(provider, kind, payload, context)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(botocore.client.BaseClient, "_make_api_call", counted)
        mp.setattr(type(services().provider), "transform", watched)
        assert _run(quiet, root) == {"batchItemFailures": []}
    assert _status(build_id) == dict.fromkeys("abcd", "completed")
    assert all("src/a.ts" in seen[t] for t in "bcd")
    cache_table = services().settings.cache_table
    batches = [p["RequestItems"] for p in reads if "RequestItems" in p]
    assert [len(b[cache_table]["Keys"]) for b in batches] == [1, 3]  # a's own read, then one for b, c and d
    assert not [p for p in reads if p.get("TableName") == cache_table]  # no look-up of its own


def test_a_step_starts_from_the_state_this_process_committed(quiet: QuietRuntime) -> None:
    """A chain run by one consumer reads the build's dispatch state for none of its steps (each
    starts from what the previous step committed), and a step another writer came before is
    decided again on what is stored: nothing is lost or started twice."""
    import botocore.client

    build_id = executing(quiet, [task("a"), task("b", "a"), task("c", "b"), task("d", "c")])
    [root] = _queued(quiet)
    builds_table = services().settings.builds_table
    reads: list[dict[str, Any]] = []
    original = botocore.client.BaseClient._make_api_call

    def counted(client_: Any, operation: str, params: dict[str, Any]) -> Any:
        if operation == "GetItem" and params["TableName"] == builds_table and "ProjectionExpression" not in params:
            reads.append(params)
        return original(client_, operation, params)

    # another writer steps in first: the state this process holds is stale for a's completion
    held = dispatch_state.committed(build_id)
    assert held is not None
    stale = held.model_copy(update={"dispatchVersion": held.dispatchVersion - 1})
    dispatch_state._committed[build_id] = stale
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(botocore.client.BaseClient, "_make_api_call", counted)
        assert _run(quiet, root) == {"batchItemFailures": []}
    # a's step (its held state had been overtaken) and d's (the build's last task: the end is
    # decided on the stored state) read the build; b's and c's started from what was held
    assert len(reads) == 2
    assert _status(build_id) == dict.fromkeys("abcd", "completed")
    started = [e.data["taskId"] for e in _events(build_id) if e.type.value == "task_started"]
    assert started == ["a", "b", "c", "d"]


def test_an_invocation_reads_back_no_file_its_own_tasks_wrote(quiet: QuietRuntime) -> None:
    """A fan-in whose parents all ran in this invocation gets their files from it (no S3 read), and
    its cache look-up rides in its one context read; it still sees every parent's file."""
    import botocore.client

    build_id = executing(quiet, [task("a", target="src/a.ts"), task("b", "a", target="src/b.ts"),
                                  task("c", "a", target="src/c.ts"), task("d", "b", "c", target="src/d.ts")])
    [root] = _queued(quiet)
    calls: list[tuple[str, dict[str, Any]]] = []
    original = botocore.client.BaseClient._make_api_call
    seen: dict[str, list[str]] = {}
    transform = type(services().provider).transform

    def counted(client_: Any, operation: str, params: dict[str, Any]) -> Any:
        calls.append((operation, params))
        return original(client_, operation, params)

    def watched(provider: Any, kind: Any, payload: dict[str, Any], context: Any) -> Any:
        seen[context.task_id] = sorted(context.files)
        return transform(provider, kind, payload, context)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(botocore.client.BaseClient, "_make_api_call", counted)
        mp.setattr(type(services().provider), "transform", watched)
        assert _run(quiet, root) == {"batchItemFailures": []}
    assert _status(build_id) == dict.fromkeys("abcd", "completed")
    assert {"src/b.ts", "src/c.ts"} <= set(seen["d"])  # both parents' files, from this invocation
    assert [p["Key"] for op, p in calls if op == "GetObject"] == []
    cache_table = services().settings.cache_table
    assert not [p for op, p in calls if op == "GetItem" and p["TableName"] == cache_table]
    # a's read, one for b and c (handed together), d's
    assert len([p for op, p in calls if op == "BatchGetItem" and cache_table in p["RequestItems"]]) == 3


def test_a_result_is_cached_in_the_commit_that_completes_its_task(quiet: QuietRuntime) -> None:
    """No write of its own for the cache: each completing transaction carries the result's cache
    item, and a later identical build is served from it."""
    import botocore.client

    plan = [task("a", target="src/a.ts"), task("b", "a", target="src/b.ts")]
    prompt = "cached in the completing commit"
    build_id = executing(quiet, plan, prompt=prompt)
    [root] = _queued(quiet)
    calls: list[tuple[str, dict[str, Any]]] = []
    original = botocore.client.BaseClient._make_api_call

    def counted(client_: Any, operation: str, params: dict[str, Any]) -> Any:
        calls.append((operation, params))
        return original(client_, operation, params)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(botocore.client.BaseClient, "_make_api_call", counted)
        assert _run(quiet, root) == {"batchItemFailures": []}
    assert _status(build_id) == dict.fromkeys("ab", "completed")
    cache_table = services().settings.cache_table
    assert not [p for op, p in calls if op in ("PutItem", "BatchWriteItem", "UpdateItem") and cache_table in str(p)]
    completing = [
        p["TransactItems"] for op, p in calls if op == "TransactWriteItems"
        and any((e.get("Put") or {}).get("Item", {}).get("type") == {"S": "task_completed"} for e in p["TransactItems"])
    ]
    assert len(completing) == 2
    assert all(any((e.get("Put") or {}).get("TableName") == cache_table for e in items) for items in completing)

    again = executing(quiet, plan, prompt=prompt)
    [root] = _queued(quiet)
    assert _run(quiet, root) == {"batchItemFailures": []}
    assert [e.data["cached"] for e in _events(again) if e.type.value == "task_completed"] == [True, True]


def test_past_the_handoff_limit_released_tasks_are_queued_with_their_definitions(
    quiet: QuietRuntime, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(handoff, "HANDOFF_LIMIT", 1)
    plan = [task("a"), task("b", "a", duration=30), task("c", "a"), task("d", "a")]
    build_id = executing(quiet, plan)
    [root] = _queued(quiet)
    assert _run(quiet, root) == {"batchItemFailures": []}
    started = [e.data["taskId"] for e in _events(build_id) if e.type.value == "task_started"]
    assert started == ["a", "b"]
    queued = _queued(quiet)
    assert [(m["taskId"], m["attempt"]) for m in queued] == [("c", 1), ("d", 1)]
    by_id = {t["id"]: Task.model_validate(t).model_dump(mode="json") for t in plan}
    assert all(m["task"] == by_id[m["taskId"]] for m in queued)
    for m in queued:  # a consumer given the definition needs no read of it, and runs it once
        assert _run(quiet, m) == {"batchItemFailures": []}
        assert _run(quiet, m, receive_count=2) == {"batchItemFailures": []}
    counts = [e.data["taskId"] for e in _events(build_id) if e.type.value == "task_started"]
    assert sorted(counts) == ["a", "b", "c", "d"]


def test_a_redelivered_parent_resends_what_it_released_and_nobody_claimed(quiet: QuietRuntime) -> None:
    build_id = executing(quiet, [task("a"), task("b", "a"), task("c", "a")])
    [root] = _queued(quiet)
    short = services().settings.task_timeout_seconds / 2  # too little time left to run them here
    assert _run(quiet, root, timeout_s=short) == {"batchItemFailures": []}
    _queued(quiet)  # the sends are lost (say the consumer died right after its commit)
    assert _run(quiet, root, receive_count=2) == {"batchItemFailures": []}
    assert [(m["taskId"], m["attempt"]) for m in _queued(quiet)] == [("b", 1), ("c", 1)]
    assert sum(e.type.value == "task_started" for e in _events(build_id)) == 1  # nothing ran twice


def test_a_handed_dependent_whose_worker_died_is_watched_by_its_parents_message(
    quiet: QuietRuntime, monkeypatch: pytest.MonkeyPatch
) -> None:
    build_id = executing(quiet, [task("a"), task("b", "a"), task("c", "a")])
    [root] = _queued(quiet)
    _worker_dies_on(monkeypatch, "b")
    _comes_back(quiet, root)  # a's message stays on the queue: it now watches b
    # the invocation ended once c, run beside b, had ended
    assert _status(build_id) == {"a": "completed", "b": "in_progress", "c": "completed"}
    monkeypatch.undo()

    # redelivered while b may still be running: the message comes back later, nothing changes
    _comes_back(quiet, root, receive_count=2)
    assert _status(build_id)["b"] == "in_progress"

    # redelivered once b's attempt is older than a task may run: its worker is surely dead, and the
    # message that watches it runs that same attempt again (the crash of a consumer costs b no attempt)
    stale = now_ms() - (services().settings.task_timeout_seconds + 31) * 1000
    services().tasks.update(build_id, "b", Update().set(startedAt=stale))
    assert _run(quiet, root, receive_count=3) == {"batchItemFailures": []}
    assert [e.data for e in _events(build_id) if e.type.value == "task_failed"] == []
    started = [(e.data["taskId"], e.data["attempt"]) for e in _events(build_id) if e.type.value == "task_started"]
    assert sorted(started) == [("a", 1), ("b", 1), ("c", 1)]  # each attempt started once
    assert _queued(quiet) == []
    assert _status(build_id) == {"a": "completed", "b": "completed", "c": "completed"}


def test_a_dead_lettered_parent_message_fails_the_dependent_it_was_watching(
    quiet: QuietRuntime, monkeypatch: pytest.MonkeyPatch
) -> None:
    build_id = executing(quiet, [task("a"), task("b", "a"), task("c", "b"), task("x")])
    root = next(m for m in _queued(quiet) if m["taskId"] == "a")
    _worker_dies_on(monkeypatch, "b")
    _comes_back(quiet, root)
    monkeypatch.undo()
    assert _status(build_id)["b"] == "in_progress"
    dispatching.on_dead_task(parse_task_message(root), services())  # a's message ran out of receives while b never ended
    assert _status(build_id) == {"a": "completed", "b": "failed", "c": "skipped", "x": "pending"}
    skipped = [e.data for e in _events(build_id) if e.type.value == "task_skipped"]
    assert [(s["taskId"], s["dependency"]) for s in skipped] == [("c", "b")]


def test_a_halted_build_leaves_the_step_to_the_dispatcher(quiet: QuietRuntime) -> None:
    build_id = executing(quiet, [task("a"), task("b", "a")])
    [root] = _queued(quiet)
    _finished(quiet)
    original = attempt.store_files

    def halt_then_store(svc: Any, bid: str, t: Task, files: Any) -> Any:
        svc.builds.update(bid, Update().set(haltedBy="cancelled"))
        return original(svc, bid, t, files)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(attempt, "store_files", halt_then_store)
        assert _run(quiet, root) == {"batchItemFailures": []}
    assert [e.type.value for e in _events(build_id)] == ["task_started", "task_completed"]
    assert [(m["taskId"], m["outcome"]) for m in _finished(quiet)] == [("a", "completed")]
    assert _queued(quiet) == []


def test_a_replayed_dispatcher_step_resends_what_it_decided_but_never_sent(
    quiet: QuietRuntime, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = {"n": 0}
    original = dispatch_state.send_batch

    def lost_once(url: str, entries: list[dict[str, Any]]) -> None:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("the dispatcher died before sending")
        original(url, entries)

    monkeypatch.setattr(dispatch_state, "send_batch", lost_once)
    build_id = new_build([task("a"), task("b")])
    with pytest.raises(StepInterrupted):  # the error name the state machine retries
        execute(quiet, build_id)
    assert _queued(quiet) == []
    event = {"action": "execute", "buildId": build_id, "taskToken": "t"}  # Step Functions retries
    assert load_handler("dispatch")(event, lambda_context("dispatch")) == {"started": True}
    assert [(m["taskId"], m["attempt"]) for m in _queued(quiet)] == [("a", 1), ("b", 1)]
    # and a further replay sends nothing more: each task is enqueued once per attempt
    assert load_handler("dispatch")(event, lambda_context("dispatch")) == {"started": True}
    assert _queued(quiet) == []


@st.composite
def _dags(draw: st.DrawFn) -> list[dict[str, Any]]:
    n = draw(st.integers(2, 9))
    plan = []
    for i in range(n):
        deps = draw(st.sets(st.integers(0, i - 1), max_size=3)) if i else set()
        plan.append(task(f"t{i}", *(f"t{d}" for d in sorted(deps)), duration=draw(st.integers(1, 40))))
    return plan


@settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
@given(plan=_dags(), window=st.integers(1, 4), rnd=st.randoms(use_true_random=False))
def test_any_dag_under_duplicated_and_reordered_messages_runs_each_task_once_after_its_parents(
    quiet: QuietRuntime, plan: list[dict[str, Any]], window: int, rnd: Any
) -> None:
    build_id = executing(quiet, plan, max_concurrency=window)
    fifo_arn = quiet.resources.queue_arns["task-finished.fifo"]
    inbox: list[tuple[str, dict[str, Any], int]] = []  # (queue, body, receive count)
    for _ in range(500):
        inbox += [("tasks", m, 1) for m in _queued(quiet)] + [("finished", m, 1) for m in _finished(quiet)]
        if not inbox:
            break
        queue, body, count = inbox.pop(rnd.randrange(len(inbox)))  # any order
        if rnd.random() < 0.3:
            inbox.append((queue, body, count + 1))  # delivered again later
        if queue == "tasks":
            assert _run(quiet, body, receive_count=count) == {"batchItemFailures": []}
        else:
            record = sqs_record(body, fifo_arn, receive_count=count, group_id=build_id)
            assert load_handler("dispatch")(sqs_event([record]), lambda_context("dispatch")) == {"batchItemFailures": []}
    assert _status(build_id) == {t["id"]: "completed" for t in plan}
    events = _events(build_id)
    started = [(e.data["taskId"], e.data["attempt"]) for e in events if e.type.value == "task_started"]
    expected = [(t["id"], 1) for t in plan] + [(t["id"], 2) for t in plan if t["id"] in ("t0", "t2", "t5")]
    assert sorted(started) == sorted(expected)  # each attempt once; the flaky ones a second time
    seq_started = {e.data["taskId"]: e.seq for e in events if e.type.value == "task_started"}  # the last
    seq_done = {e.data["taskId"]: e.seq for e in events if e.type.value == "task_completed"}
    for t in plan:
        for dep in t["input"]["dependencies"]:
            assert seq_done[dep] < seq_started[t["id"]]  # never before its parents
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
