"""Starting tasks while the plan still streams (STREAM_EXECUTION, on by default).

A task starts the moment its JSON has closed in the LLM's stream and every dependency it names has
completed. The plan step hands each task that may run to the build's dispatch state as it streams,
and the dispatch state stays the one place that knows what runs: the dispatcher and the handoff
start a handed task when its dependencies complete, exactly as they do after the plan, and the
Execute step continues from the same state once the plan is stored.

What may be handed (`StreamGate`, pure): a task whose every dependency was handed before it, and
every earlier writer of its targetPath too (writers of one path still run one after another in plan
order). A task naming a dependency that has not streamed yet waits, and is handed once it has. Only
while the stream is exactly what the stored plan will hold: the first item that is not a valid task
(one that the plan step heals or drops at the end) ends the handing, and a duplicate id is never
handed (it is renamed at the end, as today). Nothing is handed when approval is required.

Why no started task is ever undone: a handed task's dependencies are all known and handed, so it is
never part of a cycle; the recovery ladder acts only on the other tasks, and each handed task keeps
the dependencies it was handed with (`plan_validation.resolve_cycles`, `fixed`).

How it is stored, so that a dispatch step reads one consistent plan while the plan streams: each
handed task's item carries `streamOrder` (its place in the order handed, never changed), and the
build item `streamedTasks` (how many are handed), written in the same conditional write as the
dispatch state over those tasks. Once the plan is stored (`planId`), the state is rewritten over the
whole plan's order in the commit of `plan_generated`, and `scheduler.start` (the Execute step)
starts the rest. If planning fails for good after tasks started, the dispatch is halted (nothing more
starts), the started tasks finish and keep their files and events, and the Execute step ends the
build `failed` with the planning reason once they have settled.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

from pydantic import ValidationError

from shared.dal.table import Update, transact
from shared.errors import StateConflict, StepwiseError
from shared.logic.readiness import dispatch_state, scheduler
from shared.logic.readiness.plan_validation import FieldClipper, renamed_id, with_dependencies
from shared.logic.services import Services
from shared.models.build import BuildStatus
from shared.models.plan import Task
from shared.models.records import BuildRecord
from shared.observability import count, logger
from shared.providers.base import MalformedTask

_ITEMS_IN_COMMIT = 50  # task items written in the commit that hands them (a transaction holds 100)


def transact_in_batches(entries: list[dict[str, Any]]) -> None:
    for start in range(0, len(entries), _ITEMS_IN_COMMIT):
        transact(entries[start : start + _ITEMS_IN_COMMIT])


# At most this many tasks are handed while a plan streams; the rest of a longer plan waits for its end.
# A dispatch step reads every handed task's item while the plan streams (a stored plan is read once
# per process), so this bounds that reading for the plans of MAX_PLAN_TASKS; the first tasks, whose
# early start is the point, are the ones handed.
STREAM_HAND_LIMIT = 64

# Records a streamed task's own event with the given transaction entries (see StreamStarter.offer).
Record = Callable[[list[dict[str, Any]]], None]


class StreamGate:
    """Which streamed tasks may be handed to the dispatch state before the plan ends. Pure.

    `offer` each item the stream yields (clipped by `clipper`, the plan's own), in stream order; it
    returns the tasks handed by that item, in order, each with the dependencies it is handed with."""

    def __init__(
        self, clipper: FieldClipper | None = None, *, enabled: bool = True, limit: int = STREAM_HAND_LIMIT
    ) -> None:
        self.clipper = clipper or FieldClipper()
        self.limit = limit
        self.closed: str | None = None if enabled else "disabled"
        self.seen: set[str] = set()  # every valid task's id as the plan will have it (duplicates renamed)
        self.writers: dict[str, list[str]] = {}  # targetPath -> the ids writing it, in plan order
        self.waiting: list[Task] = []  # valid, not handed yet (a dependency or earlier writer is not)
        self.handed: list[Task] = []  # in the order handed
        self.handed_ids: set[str] = set()

    def offer(self, item: dict[str, Any] | MalformedTask) -> list[Task]:
        if self.closed is not None:
            return []
        task = None
        if isinstance(item, dict):
            with contextlib.suppress(ValidationError):
                task = Task.model_validate(item)
        if task is None:  # healed or dropped at the end: what follows it waits for the whole plan
            self.closed = "a task the model wrote is invalid"
            self.waiting.clear()
            return []
        path = task.input.targetPath
        if task.id in self.seen:  # the plan renames it (as repair_references does); it waits for the end
            n = 2
            while renamed_id(task.id, n) in self.seen:
                n += 1
            self.seen.add(renamed_id(task.id, n))
            if path:
                self.writers.setdefault(path, []).append(renamed_id(task.id, n))
            return []
        self.seen.add(task.id)
        deps = list(dict.fromkeys(self.clipper.ids.get(d, d) for d in task.dependencies))
        if path:
            earlier = self.writers.setdefault(path, [])
            deps += [w for w in earlier if w not in deps]
            earlier.append(task.id)
        self.waiting.append(with_dependencies(task, deps))
        return self._release()

    def _release(self) -> list[Task]:
        out: list[Task] = []
        progress = True
        while progress:
            progress = False
            for t in list(self.waiting):
                if len(self.handed) >= self.limit:  # a long plan: the rest waits for its end
                    self.closed = f"{self.limit} tasks handed while the plan streams"
                    self.waiting.clear()
                    return out
                if all(d in self.handed_ids for d in t.dependencies):  # a self-dependency never is
                    self.waiting.remove(t)
                    self.handed.append(t)
                    self.handed_ids.add(t.id)
                    out.append(t)
                    progress = True
        return out

    def fixed(self) -> dict[str, list[str]]:
        """The handed tasks' dependencies, which the stored plan keeps."""
        return {t.id: list(t.dependencies) for t in self.handed}


def handed_op(new_ids: list[str]) -> dispatch_state.Op:
    """The dispatch step that hands `new_ids` over: those whose dependencies have all completed are
    ready, and the window is filled (nothing starts once the build is halted)."""

    def op(spec: scheduler.DagSpec, st: scheduler.DispatchState, m: int) -> scheduler.Decision:
        if st.halted is None:
            st.ready |= {t for t in new_ids if all(p in st.done for p in spec.deps[t])}
        return scheduler.fill(spec, st, m)

    return op


def migrate(raw: str | None, streamed_order: tuple[str, ...], spec: scheduler.DagSpec) -> scheduler.DispatchState:
    """The dispatch state over the tasks handed while the plan streamed, read over the whole plan
    (`spec`): the same tasks in the same state. The rest of the plan joins at `scheduler.start`."""
    state = scheduler.DispatchState.from_json(raw, streamed_order)
    missing = set(streamed_order) - set(spec.deps)
    if missing:  # cannot happen: every handed task is in the plan under its own id
        raise ValueError(f"tasks handed while the plan streamed are not in the plan: {sorted(missing)}")
    state.ready = {t for t in state.ready if all(p in state.done for p in spec.deps[t])}
    state.started = False
    return state


class StreamStarter:
    """The plan step's side of it: hands tasks as they stream, commits, sends what may start."""

    def __init__(self, svc: Services, build: BuildRecord, plan_id: str, clipper: FieldClipper) -> None:
        self.svc = svc
        self.build_id = build.buildId
        self.plan_id = plan_id
        self.max_concurrency = build.maxConcurrency
        enabled = svc.settings.stream_execution and not build.requireApproval
        self.gate = StreamGate(clipper, enabled=enabled)
        self.committed = 0  # tasks handed in the dispatch state (the build's streamedTasks)
        self.unsent = False  # a hand's sends were refused by the queue
        # The build as this step last read or committed it: its next write starts from it (its
        # version condition decides; a lost race reads again).
        self._known: BuildRecord | None = build

    def offer(self, items: list[dict[str, Any] | MalformedTask], record: Record | None = None) -> None:
        """Offer the next streamed items, in order. `record(entries)` records the items' own events
        (their `plan_partial`) with these transaction entries (an empty list: with their own check):
        the hand commits in that same transaction, so a task starts one write after its JSON closed."""
        new = [task for item in items for task in self.gate.offer(item)]
        if not new:
            if record is not None:
                record([])
            return
        self.resend()
        self._hand(new, record)

    def _hand(self, new: list[Task], record: Record | None) -> None:
        svc, build_id = self.svc, self.build_id
        first = len(self.gate.handed) - len(new)
        # The items commit with the state over them (in one transaction, unless a long chain of
        # waiting tasks is released at once: then they are written first, unread until that commit).
        items = svc.tasks.tx_put_streamed(build_id, self.plan_id, [(first + i, t) for i, t in enumerate(new)])
        if len(items) > _ITEMS_IN_COMMIT:
            transact_in_batches(items)
            items = []
        handed = list(self.gate.handed)
        spec = scheduler.DagSpec.from_tasks(handed)
        new_ids = [t.id for t in new]
        op = handed_op(new_ids)
        with svc.events.serial(build_id):  # this process's dispatch steps of the build take turns
            committed = self._commit_hand(spec, op, len(handed), items, record)
        if committed is None:
            return
        cur, decision = committed
        if self._known is not None:  # the next step here starts from it, with the plan so far
            dispatch_state.remember_build(self._known)
            dispatch_state.know_plan(self._known, handed)
        self.committed = len(handed)
        dispatch_state.cancel_items(svc, build_id, cur)
        if decision.sends:
            try:
                dispatch_state.send_tasks(svc, build_id, decision.sends, {t.id: t for t in handed})
            except Exception as exc:  # the queue refused: sent again with the next hand, or at the end
                self.unsent = True
                logger.warning("streamed tasks not sent yet", extra={"error": str(exc)[:300]})
            else:
                dispatch_state.confirm_sent(svc, build_id, cur.version + 1)
                count("plan.stream_started", len(decision.sends))
        logger.info("streamed tasks handed", extra={"handed": new_ids, "started": [t for t, _ in decision.sends]})

    def _commit_hand(
        self,
        spec: scheduler.DagSpec,
        op: dispatch_state.Op,
        handed: int,
        items: list[dict[str, Any]],
        record: Record | None,
    ) -> tuple[dispatch_state.Loaded, scheduler.Decision] | None:
        """The hand's conditional write (with `record`'s event when given): the dispatch state over
        the first `handed` streamed tasks. None: the build stopped planning."""
        svc, build_id = self.svc, self.build_id
        for _ in range(51):
            # What this step (or a step of this process) last read or committed is most likely still
            # current (its version decides).
            build, self._known = dispatch_state.newest(build_id, self._known) or svc.builds.require(build_id), None
            if build.status != BuildStatus.planning:  # cancelled: nothing more is handed
                self.gate.closed = "the build is no longer planning"
                if record is not None:
                    raise StateConflict(f"build {build_id} is {build.status}")
                return None
            cur = dispatch_state.Loaded(
                build,
                spec,
                scheduler.DispatchState.from_json(build.dispatch, spec.order[: self.committed]),
                build.dispatchVersion,
                svc.clock.now_ms(),
            )
            decision = dispatch_state.decide(cur, op)
            update = dispatch_state.state_update(cur).set(streamedTasks=handed).when(
                "{status} = :planning", planning=BuildStatus.planning.value
            )
            deadline = build.deadlineAt
            if deadline is None:  # the build's time limit holds from its first task
                deadline = build.run_started_at + svc.settings.build_timeout_seconds * 1000
                update.set(deadlineAt=deadline)
            if decision.sends:
                update.set(stepVersion=cur.version + 1)
            try:
                entries = [svc.builds.tx_update(build_id, update), *items]
                if record is not None:
                    record(entries)
                else:
                    transact(entries)
            except StateConflict:
                continue
            self._known = build.model_copy(
                update={
                    "dispatch": cur.state.to_json(spec.order),
                    "dispatchVersion": cur.version + 1,
                    "haltedBy": cur.state.halted,
                    "streamedTasks": handed,
                    "deadlineAt": deadline,
                    **({"stepVersion": cur.version + 1} if decision.sends else {}),
                }
            )
            return cur, decision
        raise RuntimeError(f"handing streamed tasks of {build_id} kept losing races")  # pragma: no cover

    def resend(self) -> None:
        """Send what a hand decided but the queue refused (a copy of a message that did arrive is
        dropped by the task's claim). Raises if the queue still refuses: the step fails."""
        if not self.unsent:
            return
        build = self.svc.builds.require(self.build_id)
        step = build.stepVersion
        if build.sentVersion < step:
            state = dispatch_state.dispatch_state_of(self.svc, build).state
            unclaimed = dispatch_state.unclaimed(self.svc, self.build_id, state)
            dispatch_state.send_tasks(self.svc, self.build_id, unclaimed, dispatch_state.plan(self.svc, build)[1])
            dispatch_state.confirm_sent(self.svc, self.build_id, step)
        self.unsent = False

    def store(self, tasks: list[Task], update: Callable[[], Update], record: Callable[[Update], None]) -> bool:
        """Commit the stored plan (`record` writes its event with `update()` on the build) with the
        dispatch state rewritten over the whole plan. False: the build stopped planning (cancelled)."""
        spec = scheduler.DagSpec.from_tasks(tasks)
        order = tuple(t.id for t in self.gate.handed[: self.committed])
        with self.svc.events.serial(self.build_id):  # this process's dispatch steps of the build take turns
            for _ in range(51):
                # The build as the last hand (or a step of this process) committed it, first: its
                # version decides.
                build = dispatch_state.newest(self.build_id, self._known) or self.svc.builds.require(self.build_id)
                self._known = None
                if build.status != BuildStatus.planning:
                    return False
                version = build.dispatchVersion
                state = migrate(build.dispatch, order, spec)
                final = (
                    update()
                    .set(dispatch=state.to_json(spec.order), dispatchVersion=version + 1, haltedBy=state.halted)
                    .when("{dispatchVersion} = :ver", ver=version)
                )
                try:
                    record(final)
                except StateConflict:
                    dispatch_state.forget_commit(self.build_id)
                    continue  # a task settled meanwhile (or the build was cancelled): read again
                dispatch_state.forget_commit(self.build_id)  # the plan is stored: the next step reads the build
                break
            else:  # pragma: no cover - 50 lost races in a row
                raise RuntimeError(f"storing the plan of {self.build_id} kept losing races")
        self.resend()
        return True

    def fail(self, exc: StepwiseError) -> bool:
        """Planning failed for good after tasks started: start nothing more and keep the reason; the
        Execute step waits for the started tasks, then ends the build `failed` with it. False: the
        build stopped planning meanwhile."""
        svc, build_id = self.svc, self.build_id
        try:
            svc.builds.update(
                build_id,
                Update()
                .set(planError={"Error": type(exc).__name__, "Cause": str(exc)[:2000]}, updatedAt=svc.clock.now_ms())
                .when("{status} = :planning", planning=BuildStatus.planning.value),
            )
        except StateConflict:
            return False
        self.resend()  # a task decided to start is sent all the same: every started task is reported
        dispatch_state.apply(
            svc, build_id, lambda spec, st, m: scheduler.halt(spec, st, "planning_failed"), label="planning failed"
        )
        count("plan.failed_after_start")
        logger.warning("planning failed after tasks started; they finish first", extra={"error": str(exc)[:500]})
        return True
