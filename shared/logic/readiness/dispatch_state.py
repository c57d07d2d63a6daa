"""A build's dispatch state: loading it, deciding on it, committing it, and what follows a commit.

Every change to a build's dispatch state is a read, a pure decision (`shared.logic.readiness.scheduler`), and one
write conditioned on the state's version; on a lost race it re-reads and decides again. Events
that report a change (a task skipped) commit in the same transaction as the task's own status, so
replaying a step never emits them twice. Tasks are sent only after the state commits, and a
replayed step re-sends what the last commit decided (the task consumer drops duplicates).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from dataclasses import dataclass

from shared.dal.queues import send_batch, task_message
from shared.dal.table import Update
from shared.errors import StateConflict
from shared.logic.readiness import scheduler
from shared.logic.services import Services
from shared.models.build import BuildStatus
from shared.models.events import EventType
from shared.models.plan import UNSTARTED_TASK_STATUSES, Task, TaskStatus
from shared.models.records import BuildRecord, PlanError, TaskRecord
from shared.observability import count

_plans: dict[tuple[str, str], tuple[scheduler.DagSpec, dict[str, Task]]] = {}
# Per process: each build as this process's last dispatch step committed it (buildId -> record). The
# next step here starts from it instead of reading the build again; its version condition still
# decides, and a step that loses re-reads.
_committed: dict[str, BuildRecord] = {}
_committed_lock = threading.Lock()

Op = Callable[[scheduler.DagSpec, scheduler.DispatchState, int], scheduler.Decision]


@dataclass
class Loaded:
    build: BuildRecord
    spec: scheduler.DagSpec
    state: scheduler.DispatchState
    version: int
    now_ms: int  # when it was read (services' clock): the step's deadline check and updatedAt


def plan(svc: Services, build: BuildRecord) -> tuple[scheduler.DagSpec, dict[str, Task]]:
    """The build's current plan: its shape for the scheduler and each task's definition, read once
    per process and plan version (an approval edit makes a new version)."""
    cached = _plans.get(_plan_key(build))
    if cached is None:
        cached = know_plan(build, [i.task for i in dispatched_items(build, svc.tasks.list(build.buildId))])
    return cached


def know_plan(build: BuildRecord, tasks: list[Task]) -> tuple[scheduler.DagSpec, dict[str, Task]]:
    """The plan `build` dispatches over is `tasks`, in its order: what `plan` would read, from the step
    that just wrote those task items (no read in this process)."""
    known = (scheduler.DagSpec.from_tasks(tasks), {t.id: t for t in tasks})
    if len(_plans) > 256:
        _plans.clear()
    _plans[_plan_key(build)] = known
    return known


def _plan_key(build: BuildRecord) -> tuple[str, str]:
    return build.buildId, f"{build.planId}:{build.planVersion}:{streamed_count(build)}"


def committed(build_id: str) -> BuildRecord | None:
    """The build as this process last committed a dispatch step of it, if it did."""
    with _committed_lock:
        return _committed.get(build_id)


def remember_commit(cur: Loaded) -> None:
    """`cur`'s build as the step that wrote `state_update(cur)` left it (once that committed)."""
    build = cur.build.model_copy(
        update={
            "dispatch": cur.state.to_json(cur.spec.order),
            "dispatchVersion": cur.version + 1,
            "haltedBy": cur.state.halted,
        }
    )
    remember_build(build)


def remember_build(build: BuildRecord) -> None:
    """The build as a dispatch step of this process just committed it."""
    with _committed_lock:
        if len(_committed) > 256:
            _committed.clear()
        _committed[build.buildId] = build


def newest(build_id: str, known: BuildRecord | None) -> BuildRecord | None:
    """Of `known` (the build as a step holds it) and what this process last committed, the later."""
    held = committed(build_id)
    if held is None or (known is not None and known.dispatchVersion >= held.dispatchVersion):
        return known
    return held


def forget_commit(build_id: str) -> None:
    with _committed_lock:
        _committed.pop(build_id, None)


def streamed_count(build: BuildRecord) -> int | None:
    """While the plan streams and its plan step has started tasks: how many tasks it has handed to
    the dispatch state (the plan so far, as far as dispatching goes). None once the plan is stored."""
    return None if build.planId else build.streamedTasks


def dispatched_items(build: BuildRecord, items: list[TaskRecord]) -> list[TaskRecord]:
    """Of the build's task items (in plan order), those its dispatch state is written over, in its
    order: all of them, or while the plan streams, the tasks handed so far in the order handed."""
    streamed = streamed_count(build)
    if streamed is None:
        return items
    handed = [i for i in items if i.streamOrder is not None and i.streamOrder < streamed]
    return sorted(handed, key=lambda i: i.streamOrder or 0)


def dag_spec(svc: Services, build: BuildRecord) -> scheduler.DagSpec:
    return plan(svc, build)[0]


def dispatch_state_of(svc: Services, build: BuildRecord) -> Loaded:
    """The dispatch state of a build item already read."""
    spec = dag_spec(svc, build)
    return Loaded(
        build,
        spec,
        scheduler.DispatchState.from_json(build.dispatch, spec.order),
        build.dispatchVersion,
        svc.clock.now_ms(),
    )


def decide(cur: Loaded, op: Op) -> scheduler.Decision:
    """`op` on the loaded state, after what every step also checks: a cancel, the build's time
    limit and budget. Mutates `cur.state`; nothing is written."""
    max_conc = cur.build.maxConcurrency
    if cur.build.status == BuildStatus.cancelled and cur.state.halted is None:
        # The cancel committed; its halt message may come later (or never, if the API died first):
        # what has not started is cancelled now, not skipped after the build's end.
        scheduler.halt(cur.spec, cur.state, "cancelled")
    if _past_deadline(cur.build, cur.now_ms) and cur.state.halted is None:
        scheduler.halt(cur.spec, cur.state, "timed_out")
    decision = op(cur.spec, cur.state, max_conc)
    budget = cur.build.budgetUsd
    if budget is not None and spent_usd(cur) >= budget and cur.state.halted is None:
        for t, _ in decision.sends:  # decided but not sent: take them back
            cur.state.running.pop(t, None)
            cur.state.attempts[t] = max(0, cur.state.attempts.get(t, 1) - 1)
        scheduler.halt(cur.spec, cur.state, "budget_exceeded")
        decision.sends = []
        decision.all_terminal = scheduler.fill(cur.spec, cur.state, 0).all_terminal
    return decision


def spent_usd(cur: Loaded) -> float:
    """What the build has cost so far: its plan (with heal calls) and every task attempt reported."""
    plan_usage = cur.build.planUsage
    return cur.state.cost_usd + ((plan_usage.costUsd if plan_usage else None) or 0.0)


def state_update(cur: Loaded) -> Update:
    """The write of a step: the new dispatch state, if the version read is still the latest."""
    return (
        Update()
        .set(
            dispatch=cur.state.to_json(cur.spec.order),
            dispatchVersion=cur.version + 1,
            haltedBy=cur.state.halted,  # None removes it; a task claim checks it is absent
            updatedAt=cur.now_ms,
        )
        .when("attribute_not_exists({dispatchVersion}) OR {dispatchVersion} = :ver", ver=cur.version)
    )


def apply(
    svc: Services, build_id: str, op: Op, *, label: str, known: BuildRecord | None = None
) -> tuple[Loaded, scheduler.Decision]:
    """Run `op` against the build's dispatch state until its commit wins; then act on the decision.

    `known`: the build as the caller just read and wrote it, tried first instead of a read (its
    version condition decides); a decision that would act without that commit (nothing to do, skips,
    cancels) is taken on a fresh read instead."""
    with svc.events.serial(build_id):  # this process's dispatch steps of the build take turns: no lost races
        for _ in range(51):
            build, from_known, known = known or svc.builds.require(build_id), known is not None, None
            cur = dispatch_state_of(svc, build)
            decision = decide(cur, op)
            if from_known and (decision.duplicate or decision.skipped or cur.state.halted is not None):
                continue
            if decision.duplicate:
                break
            _record_skips(svc, build_id, decision)
            cancel_items(svc, build_id, cur)
            update = state_update(cur)
            if decision.sends:
                update.set(stepVersion=cur.version + 1)  # confirmed by sentVersion once they are sent
            try:
                svc.builds.update(build_id, update)
            except StateConflict:
                forget_commit(build_id)
                continue
            remember_commit(cur)
            if cur.state.halted == "budget_exceeded" and not cur.build.haltedBy:
                count("build.budget_exceeded")  # once, by the step that committed the halt
            break
        else:  # pragma: no cover - 50 lost races in a row
            raise RuntimeError(f"dispatch of {build_id} ({label}) kept losing races")
    if decision.duplicate:
        # A replayed step, or a report already applied. If the last step that decided sends died
        # before confirming them, they may never have reached the queue: re-send what is in flight
        # but unclaimed (a copy of a message that did arrive is dropped by the task's claim).
        # Otherwise nothing is sent: each task is enqueued once per attempt.
        step = cur.build.stepVersion
        if cur.build.sentVersion < step:
            send_tasks(svc, build_id, unclaimed(svc, build_id, cur.state), plan(svc, cur.build)[1])
            confirm_sent(svc, build_id, step)
    elif decision.sends:
        send_tasks(svc, build_id, decision.sends, plan(svc, cur.build)[1])
        confirm_sent(svc, build_id, cur.version + 1)
    if decision.all_terminal:
        finish_execution(svc, cur)
    return cur, decision


def unclaimed(svc: Services, build_id: str, state: scheduler.DispatchState) -> list[tuple[str, int]]:
    """The (task, attempt) pairs the state has in flight that no worker has claimed yet."""
    out = []
    for task_id, attempt in sorted(state.running.items()):
        item = svc.tasks.get(build_id, task_id)
        if item is None or (item.attempt < attempt and item.status in UNSTARTED_TASK_STATUSES):
            out.append((task_id, attempt))
    return out


def _past_deadline(build: BuildRecord, now_ms: int) -> bool:
    return build.deadlineAt is not None and now_ms > build.deadlineAt


def _record_skips(svc: Services, build_id: str, decision: scheduler.Decision) -> None:
    for task_id, dependency in decision.skipped:
        skip = (
            Update()
            .set(status=TaskStatus.skipped.value, skippedBecause=dependency, updatedAt=svc.clock.now_ms())
            .when("{status} = :pending", pending=TaskStatus.pending.value)
        )
        with contextlib.suppress(StateConflict):  # already skipped by an earlier run of this step
            svc.events.record(
                build_id,
                EventType.task_skipped,
                {"taskId": task_id, "reason": "dependency_failed", "dependency": dependency},
                also=[svc.tasks.tx_update(build_id, task_id, skip)],
            )


def cancel_items(svc: Services, build_id: str, cur: Loaded) -> None:
    if cur.state.halted is None:
        return
    for task_id in cur.state.cancelled:
        with contextlib.suppress(StateConflict):
            svc.tasks.update(
                build_id,
                task_id,
                Update()
                .set(status=TaskStatus.cancelled.value, updatedAt=svc.clock.now_ms())
                .when("{status} = :pending", pending=TaskStatus.pending.value),
            )


def send_tasks(
    svc: Services, build_id: str, sends: list[tuple[str, int]], definitions: dict[str, Task] | None = None
) -> None:
    """Enqueue (task, attempt) pairs, each with its definition when known."""
    if sends:
        defs = definitions or {}
        send_batch(
            svc.settings.tasks_queue_url,
            [
                task_message(build_id, t, a, idx=i, task=defs[t].model_dump(mode="json") if t in defs else None)
                for i, (t, a) in enumerate(sends)
            ],
        )


def confirm_sent(svc: Services, build_id: str, version: int) -> None:
    """Record that the tasks decided by the step committed at `version` are on the queue."""
    with contextlib.suppress(StateConflict):  # a later step confirmed its own sends already
        svc.builds.update(
            build_id,
            Update()
            .set(sentVersion=version)
            .when("attribute_not_exists({sentVersion}) OR {sentVersion} < :v", v=version),
        )


def finish_execution(svc: Services, cur: Loaded) -> None:
    # The token is read after the step that settled the last task committed, not from the item that
    # step loaded: an Execute that stored its token in between (a re-opened run starting while its
    # task finishes) then either sees every task settled itself or has its token answered here.
    now = svc.builds.get(cur.build.buildId, attributes=["executeToken"])
    token = now.executeToken if now else None
    if not token:
        return
    if cur.state.halted == "budget_exceeded":
        svc.workflow.fail(
            token,
            "BudgetExceeded",
            f"Recorded cost ${spent_usd(cur):.4f} reached the budget of "
            f"${cur.build.budgetUsd or 0.0:.4f}; no new task was started.",
        )
    elif cur.state.halted == "timed_out":  # the dispatcher saw the deadline pass before Step Functions did
        svc.workflow.fail(token, "BuildTimedOut", "The build ran past its time limit.")
    elif cur.state.halted == "planning_failed":  # the tasks started while it streamed have settled
        error = cur.build.planError or PlanError()
        svc.workflow.fail(token, error.Error, error.Cause)
    elif cur.state.halted is None:
        svc.workflow.succeed(token, {"halted": None})


def finished_op(task_id: str, outcome: str, attempt: int, cost: float) -> Op:
    """The step for "attempt `attempt` of `task_id` ended with `outcome`"."""

    def op(spec: scheduler.DagSpec, st: scheduler.DispatchState, m: int) -> scheduler.Decision:
        in_flight = st.running.get(task_id)
        if in_flight is None or attempt < in_flight:
            # settled already, or a stale report from an attempt older than the one now in
            # flight (a retried task must not be failed again by its previous run's message)
            return scheduler.duplicate(spec, st)
        st.attempts[task_id] = max(st.attempts.get(task_id, 0), attempt)
        if outcome == "completed":
            return scheduler.task_succeeded(spec, st, task_id, m, cost)
        if outcome == "cancelled":
            st.running.pop(task_id, None)
            st.cancelled.add(task_id)
            return scheduler.fill(spec, st, m)
        return scheduler.task_failed(spec, st, task_id, m, cost)

    return op
