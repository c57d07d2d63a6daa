"""How an attempt that did not complete is settled: recorded with what it cost, then retried (a delayed
task message) or reported to the dispatcher; and the attempt's log line and metrics."""

from __future__ import annotations

from aws_lambda_powertools.metrics import MetricUnit

from shared.backoff import exponential_backoff_s
from shared.dal.queues import finished_message, send_batch, task_message
from shared.dal.table import Update
from shared.errors import StateConflict
from shared.logic.services import Services
from shared.models.events import EventType
from shared.models.messages import Outcome, TaskFinished, TaskMessage
from shared.models.plan import UNSTARTED_TASK_STATUSES, Task, TaskStatus, Usage
from shared.observability import emit, logger

RETRY_DELAY_CAP_S = 900.0  # a retry is a delayed message: SQS delays one by 15 minutes at most


def settle_failure(
    svc: Services,
    msg: TaskMessage,
    task: Task,
    error: str,
    *,
    timed_out: bool,
    started: int,
    usage: Usage | None = None,
    attempt_usage: Usage | None = None,
    final: bool = False,
) -> None:
    """Record a failed (or timed-out) attempt and what it cost; retry it, or report the run's end.
    `usage`: what the earlier attempts of this run cost; `attempt_usage`: this attempt's share;
    `final`: no retry whatever the attempt (a halted build)."""
    will_retry = msg.attempt < svc.settings.task_max_attempts and not final
    status = TaskStatus.queued if will_retry else TaskStatus.timeout if timed_out else TaskStatus.failed
    this = attempt_usage or Usage()
    total = (usage or Usage()) + this
    duration = svc.clock.now_ms() - started
    update = (
        billed(Update(), this)
        .set(status=status.value, error=error, updatedAt=svc.clock.now_ms(), durationMs=duration, usage=total.model_dump())
        .when("{status} = :ip AND {attempt} = :a", ip=TaskStatus.in_progress.value, a=msg.attempt)
    )
    if timed_out:
        event, data = (
            EventType.task_timeout,
            {"taskId": task.id, "taskName": task.name, "attempt": msg.attempt, "willRetry": will_retry},
        )
    else:
        event, data = (
            EventType.task_failed,
            {"taskId": task.id, "taskName": task.name, "error": error, "attempt": msg.attempt, "willRetry": will_retry},
        )
    try:
        svc.events.record(msg.buildId, event, data, also=[svc.tasks.tx_update(msg.buildId, task.id, update)])
    except StateConflict:
        return
    observe(svc, msg.buildId, task, msg.attempt, "task.timeout" if timed_out else "task.failed", duration, this, total, error)
    retry_or_report(svc, msg.model_copy(update={"spent": total}), will_retry)


def retry_or_report(svc: Services, msg: TaskMessage, will_retry: bool) -> None:
    if will_retry:
        delay = exponential_backoff_s(
            msg.attempt, base=svc.settings.task_retry_base_seconds, cap=RETRY_DELAY_CAP_S, jitter=(0.8, 1.2)
        )
        send_batch(
            svc.settings.tasks_queue_url,
            [
                task_message(
                    msg.buildId,
                    msg.taskId,
                    msg.attempt + 1,
                    delay_s=round(delay),
                    task=msg.task,
                    spent=msg.spent.model_dump() if msg.spent else None,
                )
            ],
        )
    else:
        tell_dispatcher(svc, msg, "failed", (msg.spent.costUsd or 0.0) if msg.spent else 0.0)


def tell_dispatcher(svc: Services, msg: TaskMessage, outcome: Outcome, cost: float) -> None:
    body = TaskFinished(buildId=msg.buildId, taskId=msg.taskId, attempt=msg.attempt, outcome=outcome, costUsd=cost)
    send_batch(svc.settings.task_finished_queue_url, [finished_message(body, f"{msg.taskId}:{msg.attempt}:{outcome}")])


def cancel_unstarted(svc: Services, msg: TaskMessage) -> None:
    try:
        svc.tasks.update(
            msg.buildId,
            msg.taskId,
            Update()
            .set(status=TaskStatus.cancelled.value, updatedAt=svc.clock.now_ms())
            .when_in("status", UNSTARTED_TASK_STATUSES),
        )
    except StateConflict:
        return
    tell_dispatcher(svc, msg, "cancelled", 0.0)


def billed(update: Update, attempt: Usage) -> Update:
    """Add one attempt's usage to the task's running totals (every attempt of every run), which the
    build's metrics sum. Commits with the attempt's settle, whose condition makes it count once."""
    update.add(
        spentUsd=attempt.costUsd or 0.0,
        spentPromptTokens=attempt.promptTokens,
        spentCompletionTokens=attempt.completionTokens,
    )
    if attempt.costUsd is None:
        update.set(spentUnpriced=True)
    if attempt.estimated:
        update.set(spentEstimated=True)
    return update


def log_start(build_id: str, task: Task, attempt: int) -> None:
    # buildId named on the line itself: handed tasks run in threads beside others of the same process.
    logger.info("task.start", extra={"buildId": build_id, "taskId": task.id, "taskType": task.type.value,
                                     "attempt": attempt})
    emit([("task.started", 1, MetricUnit.Count)], taskType=task.type.value)


def observe(
    svc: Services,
    build_id: str,
    task: Task,
    attempt: int,
    outcome: str,
    duration_ms: int,
    attempt_usage: Usage,
    usage: Usage,
    error: str | None = None,
) -> None:
    """The attempt's log line (`task.complete` / `task.error`) and metrics (per task type, per provider)."""
    line = {
        "buildId": build_id,
        "taskId": task.id,
        "taskType": task.type.value,
        "attempt": attempt,
        "outcome": outcome.removeprefix("task."),
        "durationMs": duration_ms,
        "tokens": {"prompt": attempt_usage.promptTokens, "completion": attempt_usage.completionTokens},
        "costUsd": attempt_usage.costUsd,
        "estimated": attempt_usage.estimated,
        "taskCostUsd": usage.costUsd,
    }
    if error is None:
        logger.info("task.complete", extra=line)
    else:
        logger.warning("task.error", extra={**line, "error": error})
    emit(
        [
            (outcome, 1, MetricUnit.Count),
            ("task.duration_ms", duration_ms, MetricUnit.Milliseconds),
            ("task.cost_usd", attempt_usage.costUsd or 0.0, MetricUnit.NoUnit),
        ],
        taskType=task.type.value,
    )
    if attempt_usage.promptTokens or attempt_usage.completionTokens or attempt_usage.costUsd:
        emit(
            [
                ("tokens.prompt", attempt_usage.promptTokens, MetricUnit.Count),
                ("tokens.completion", attempt_usage.completionTokens, MetricUnit.Count),
                ("cost.usd", attempt_usage.costUsd or 0.0, MetricUnit.NoUnit),
            ],
            provider=svc.provider.name,
        )
