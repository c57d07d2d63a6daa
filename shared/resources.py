"""The tables, queues and functions Stepwise runs on, described once as plain data.

`infra/` builds its CDK constructs from this description and the local runtime creates the same
tables and queues on moto from it, so the two cannot drift (a test compares the synthesized template
with what the local runtime creates). Time and memory numbers come from `shared.limits`; nothing
here imports CDK or boto3.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from shared import constants as c
from shared import limits

KeyType = Literal["S", "N"]


# --- tables ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Key:
    name: str
    type: KeyType


@dataclass(frozen=True)
class Index:
    """A global secondary index."""

    name: str
    partition: Key
    sort: Key | None = None
    projection: Literal["ALL", "KEYS_ONLY"] = "ALL"


@dataclass(frozen=True)
class TableSpec:
    name: str  # short name: "builds"
    env: str  # the variable naming the table to the functions
    partition: Key
    sort: Key | None = None
    indexes: tuple[Index, ...] = ()
    stream: Literal["NEW_IMAGE"] | None = None  # the events table's stream is the outbox
    ttl: str | None = None  # the attribute DynamoDB expires items by
    ephemeral: bool = False  # True: connection state that goes with the stack (never retained)

    @property
    def construct_id(self) -> str:
        return self.name.capitalize()

    @property
    def keys(self) -> tuple[Key, ...]:
        return (self.partition, self.sort) if self.sort else (self.partition,)


BUILDS_BY_OWNER_INDEX = c.BUILDS_BY_OWNER_INDEX
BY_CONNECTION_INDEX = c.CONNECTIONS_BY_CONNECTION_INDEX

# Retention (RECORD_TTL_DAYS): each build, task, event and cache entry carries its expiry in
# TTL_ATTRIBUTE. The idempotency table is laid out as Powertools wants it: key `id`, TTL `expiration`.
TABLES: dict[str, TableSpec] = {
    t.name: t
    for t in (
        TableSpec(
            "builds",
            c.BUILDS_TABLE,
            Key("buildId", "S"),
            indexes=(Index(BUILDS_BY_OWNER_INDEX, Key("ownerId", "S"), Key("createdAt", "N")),),
            ttl=c.TTL_ATTRIBUTE,
        ),
        TableSpec("tasks", c.TASKS_TABLE, Key("buildId", "S"), Key("taskId", "S"), ttl=c.TTL_ATTRIBUTE),
        TableSpec(
            "events", c.EVENTS_TABLE, Key("buildId", "S"), Key("seq", "N"), stream="NEW_IMAGE", ttl=c.TTL_ATTRIBUTE
        ),
        TableSpec("cache", c.CACHE_TABLE, Key("cacheKey", "S"), ttl=c.TTL_ATTRIBUTE),
        TableSpec("idempotency", c.IDEMPOTENCY_TABLE, Key("id", "S"), ttl="expiration"),
    )
}

# The WebSocket API's connections and subscriptions, keyed (pk, sk) as `shared.dal.connections`
# describes; the sparse index (subscriptions only) finds a connection's subscriptions. Every item
# expires after the 2 hours API Gateway keeps a connection, so the table goes with the stack. The
# WebSocket construct makes it on AWS; the local runtime creates it too.
CONNECTIONS = TableSpec(
    "connections",
    c.CONNECTIONS_TABLE,
    Key("pk", "S"),
    Key("sk", "S"),
    indexes=(Index(BY_CONNECTION_INDEX, Key("connectionId", "S"), projection="KEYS_ONLY"),),
    ttl=c.TTL_ATTRIBUTE,
    ephemeral=True,
)


# --- functions -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class FunctionLimits:
    memory_mb: int
    timeout_s: int  # what Lambda stops the function at


def functions(task_timeout_s: float) -> dict[str, FunctionLimits]:
    """Memory and time limit of each of the five functions (the task function's follows
    TASK_TIMEOUT_SECONDS)."""
    return {
        name: FunctionLimits(memory, limits.function_timeout_s(name, task_timeout_s))
        for name, memory in limits.FUNCTION_MEMORY_MB.items()
    }


# --- queues ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class QueueSpec:
    name: str  # logical name: "task-finished" (the queue's own name adds ".fifo" when FIFO)
    construct_id: str
    retention_days: int
    fifo: bool = False
    consumer: str | None = None  # the function whose event source it is: visibility = 6x its timeout
    batch_size: int | None = None  # the event source mapping's batch size
    dlq: str | None = None  # logical name of its dead-letter queue
    max_receives: int | None = None  # receives before the dead-letter queue takes a message
    local: bool = True  # False: only the deployed stack has it

    @property
    def queue_name(self) -> str:
        return f"{self.name}.fifo" if self.fifo else self.name

    def visibility_s(self, task_timeout_s: float, scale: float = 1.0) -> int | None:
        """6x the consuming function's timeout (the Lambda guidance for SQS event sources), so a
        batch that still runs is never handed to a second consumer; times `scale` (the local
        runtime's one factor, `limits.LOCAL_VISIBILITY_SCALE`), in whole seconds, at least one.
        None: the SQS default."""
        if self.consumer is None:
            return None
        deployed = limits.VISIBILITY_FACTOR * limits.function_timeout_s(self.consumer, task_timeout_s)
        return max(1, round(deployed * scale))


DLQ_RETENTION_DAYS = 14


def queues(*, webhook_max_attempts: int) -> dict[str, QueueSpec]:
    """Every queue, each dead-letter queue before the queue that redrives into it."""
    specs = (
        # Tasks to run. Each attempt is its own message (a retry is re-sent with a delay), so the
        # receive count only counts crashes of one attempt: then the dispatcher marks the task failed.
        QueueSpec("tasks-dlq", "TasksDlq", DLQ_RETENTION_DAYS, consumer="dispatch", batch_size=10),
        QueueSpec(
            "tasks",
            "Tasks",
            4,
            consumer="task",
            batch_size=1,
            dlq="tasks-dlq",
            max_receives=limits.TASKS_DLQ_MAX_RECEIVES,
        ),
        # "Task finished" notices for the dispatcher: FIFO per build (MessageGroupId = buildId).
        QueueSpec("task-finished-dlq", "TaskFinishedDlq", DLQ_RETENTION_DAYS, fifo=True),
        QueueSpec(
            "task-finished",
            "TaskFinished",
            4,
            fifo=True,
            consumer="dispatch",
            batch_size=10,
            dlq="task-finished-dlq",
            max_receives=limits.TASK_FINISHED_DLQ_MAX_RECEIVES,
        ),
        # Webhook deliveries. The consumer backs off by changing the message's visibility, so the
        # receive count is the attempt count: the DLQ takes a message after WEBHOOK_MAX_ATTEMPTS.
        QueueSpec("webhooks-dlq", "WebhooksDlq", DLQ_RETENTION_DAYS),
        QueueSpec(
            "webhooks",
            "Webhooks",
            14,
            consumer="webhook",
            batch_size=limits.WEBHOOK_BATCH_SIZE,
            dlq="webhooks-dlq",
            max_receives=webhook_max_attempts,
        ),
        # Stream records the outbox pipe could not put on the webhook queue (the pipe is AWS only).
        QueueSpec("outbox-dlq", "OutboxDlq", DLQ_RETENTION_DAYS, local=False),
    )
    return {q.name: q for q in specs}


def queue_visibility_s(queue: str, task_timeout_s: float, scale: float = 1.0) -> int:
    """The visibility timeout of the queue a consumer reads (tasks, tasks-dlq, task-finished,
    webhooks), times `scale`. The receive counts play no part in it."""
    visibility = queues(webhook_max_attempts=1)[queue].visibility_s(task_timeout_s, scale)
    if visibility is None:
        raise KeyError(f"queue {queue} has no consumer, so no visibility timeout of its own")
    return visibility
