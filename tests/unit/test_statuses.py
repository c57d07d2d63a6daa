"""Status transitions are named sets, and the data layer turns a set into a condition."""

from __future__ import annotations

from shared.dal.table import Update
from shared.models.build import SUCCEEDED_BUILD_STATUSES, TERMINAL_BUILD_STATUSES, BuildStatus
from shared.models.plan import (
    FAILED_TASK_STATUSES,
    RETRYABLE_TASK_STATUSES,
    SKIPPABLE_TASK_STATUSES,
    TERMINAL_TASK_STATUSES,
    UNSTARTED_TASK_STATUSES,
    TaskStatus,
)


def test_every_task_status_is_unstarted_running_or_settled_exactly_once() -> None:
    assert UNSTARTED_TASK_STATUSES.isdisjoint(TERMINAL_TASK_STATUSES)
    assert UNSTARTED_TASK_STATUSES | TERMINAL_TASK_STATUSES | {TaskStatus.in_progress} == set(TaskStatus)
    assert FAILED_TASK_STATUSES == SKIPPABLE_TASK_STATUSES < RETRYABLE_TASK_STATUSES < TERMINAL_TASK_STATUSES
    assert TaskStatus.completed not in RETRYABLE_TASK_STATUSES  # a completed task is never re-run
    assert SUCCEEDED_BUILD_STATUSES < TERMINAL_BUILD_STATUSES and BuildStatus.executing not in TERMINAL_BUILD_STATUSES


def test_a_set_becomes_an_in_condition_with_one_placeholder_per_status() -> None:
    update = Update().set(status="cancelled").when_in("status", UNSTARTED_TASK_STATUSES)
    kwargs = update.kwargs("tasks", {"buildId": "b", "taskId": "t"})
    assert kwargs["ConditionExpression"] == "#status IN (:n2, :n3)"
    assert kwargs["ExpressionAttributeValues"][":n2"] == {"S": "pending"}
    assert kwargs["ExpressionAttributeValues"][":n3"] == {"S": "queued"}
    negated = Update().when("{attempt} < :a", a=3).when_not_in("status", TERMINAL_TASK_STATUSES)
    assert negated.condition == "(#attempt < :a) AND (NOT #status IN (:n1, :n2, :n3, :n4, :n5))"
    assert sorted(v["S"] for k, v in negated.values.items() if k.startswith(":n")) == sorted(TERMINAL_TASK_STATUSES)
