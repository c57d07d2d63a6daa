"""Re-opening tasks: a retry or skip of a failed task (during its run or after the build ended) and
the items a re-opened run makes pending again."""

from __future__ import annotations

import contextlib

from shared.dal.table import Update
from shared.errors import StateConflict
from shared.logic.readiness import scheduler
from shared.logic.readiness.dispatch_state import apply, dag_spec
from shared.logic.services import Services
from shared.models.events import EventType
from shared.models.plan import RETRYABLE_TASK_STATUSES, SKIPPABLE_TASK_STATUSES, TaskStatus
from shared.models.records import BuildRecord


class RunEnding(Exception):
    """Every task of the run has settled: its Execute step is answered (or about to be) and Finalize
    is ending the run, so no task can join it any more; the caller re-opens the build once it ended."""


class NotSettled(Exception):
    """The task's attempt ended (its item says so) but the dispatcher has not taken that step yet: a
    retry or skip now would act on a state that still has it running and be lost; the caller waits."""


def _unsettled(st: scheduler.DispatchState, task_id: str, in_run: bool) -> None:
    if in_run and task_id in st.running:
        raise NotSettled(task_id)


def reopenable(svc: Services, build: BuildRecord, task_id: str) -> list[str]:
    """What a retry of `task_id` would re-open: the task and those of its skipped dependents that can
    run again (one that also waits on another failed task stays skipped), and the tasks a halt
    cancelled. Empty: nothing can run."""
    spec = dag_spec(svc, build)
    state = scheduler.DispatchState.from_json(build.dispatch, spec.order)
    return scheduler.retry(spec, state, task_id, build.maxConcurrency)


def _ending(svc: Services, build: BuildRecord) -> bool:
    spec = dag_spec(svc, build)
    return scheduler.all_terminal(spec, scheduler.DispatchState.from_json(build.dispatch, spec.order))


def _reopen_items(svc: Services, build_id: str, task_ids: list[str]) -> None:
    for t in task_ids:
        with contextlib.suppress(StateConflict):
            svc.tasks.update(
                build_id,
                t,
                Update()
                .set(status=TaskStatus.pending.value, error=None, skippedBecause=None, updatedAt=svc.clock.now_ms())
                .when_in("status", RETRYABLE_TASK_STATUSES),
            )


def reopen_items(svc: Services, build_id: str, build: BuildRecord | None = None) -> list[str]:
    """Make pending the items of the tasks the dispatch state re-opened while their items still show
    how an earlier run ended them (failed, timed out, skipped, cancelled): a task the state no longer
    holds closed, not yet sent in this run or sent with a later attempt than its item's. Each write is
    conditioned on the item as read, so a task that ran meanwhile keeps its outcome. Returns the ids."""
    build = build or svc.builds.require(build_id)
    spec = dag_spec(svc, build)
    state = scheduler.DispatchState.from_json(build.dispatch, spec.order)
    held = state.failed | state.skipped | state.cancelled | state.done
    out = []
    for item in svc.tasks.list(build_id, attributes=["attempt"]):
        task_id, attempt = item.taskId, item.attempt
        if task_id in held or task_id not in spec.deps or item.status not in RETRYABLE_TASK_STATUSES:
            continue
        if task_id in state.running and attempt >= state.running[task_id]:
            continue  # this run's attempt ended: the dispatcher hears of it
        with contextlib.suppress(StateConflict):
            svc.tasks.update(
                build_id,
                task_id,
                Update()
                .set(status=TaskStatus.pending.value, error=None, skippedBecause=None, updatedAt=svc.clock.now_ms())
                .when("{status} = :s", s=item.status.value)
                .when("attribute_not_exists({attempt}) OR {attempt} = :a", a=attempt),
            )
            out.append(task_id)
    return out


def reopen_task(build_id: str, task_id: str, svc: Services, *, in_run: bool = False) -> list[str]:
    """Re-open a task and its skipped dependents that can run (items first, so a re-opened child can
    be claimed), then let the scheduler start it. Returns the re-opened ids.

    `in_run`: the build is executing and the task is to join its current run; raises RunEnding when
    that run has already settled every task (its end is being recorded)."""
    build = svc.builds.require(build_id)
    if in_run and _ending(svc, build):
        raise RunEnding(build_id)
    spec = dag_spec(svc, build)
    _unsettled(scheduler.DispatchState.from_json(build.dispatch, spec.order), task_id, in_run)
    reopened = reopenable(svc, build, task_id)
    _reopen_items(svc, build_id, reopened)

    def op(spec: scheduler.DagSpec, st: scheduler.DispatchState, m: int) -> scheduler.Decision:
        if in_run and scheduler.all_terminal(spec, st):
            raise RunEnding(build_id)
        _unsettled(st, task_id, in_run)
        scheduler.retry(spec, st, task_id, m)
        return scheduler.fill(spec, st, m)

    apply(svc, build_id, op, label=f"retry {task_id}")
    return reopened


def skip_failed_task(build_id: str, task_id: str, svc: Services, *, in_run: bool = False) -> list[str]:
    """The user skips a failed task: it becomes `skipped` (reason user) and the dependents it held
    back run without its output. Returns the re-opened dependents. `in_run` as for reopen_task."""
    build = svc.builds.require(build_id)
    if in_run and _ending(svc, build):
        raise RunEnding(build_id)
    spec = dag_spec(svc, build)
    state = scheduler.DispatchState.from_json(build.dispatch, spec.order)
    _unsettled(state, task_id, in_run)
    reopened = scheduler.skip(spec, state, task_id, build.maxConcurrency) or []
    with contextlib.suppress(StateConflict):  # skipped already by an earlier try of this request
        svc.events.record(
            build_id,
            EventType.task_skipped,
            {"taskId": task_id, "reason": "user"},
            also=[
                svc.tasks.tx_update(
                    build_id,
                    task_id,
                    Update()
                    .set(status=TaskStatus.skipped.value, skippedBecause="user", updatedAt=svc.clock.now_ms())
                    .when_in("status", SKIPPABLE_TASK_STATUSES),
                )
            ],
        )
    _reopen_items(svc, build_id, reopened)

    def op(spec: scheduler.DagSpec, st: scheduler.DispatchState, m: int) -> scheduler.Decision:
        if in_run and scheduler.all_terminal(spec, st):
            raise RunEnding(build_id)
        _unsettled(st, task_id, in_run)
        if scheduler.skip(spec, st, task_id, m) is None:
            return scheduler.duplicate(spec, st)
        return scheduler.fill(spec, st, m)

    apply(svc, build_id, op, label=f"skip {task_id}")
    return reopened

