"""SQS queues, each with its dead-letter queue. SSE-SQS encryption (no key grants needed by the
pipe or the consumers), TLS-only access policies, 14-day retention on every DLQ.

Which queues exist, FIFO or not, their visibility timeouts (6x the consuming function's timeout),
retention, dead-letter queues and receive counts are `shared.resources`, from which the local
runtime creates the same queues.
"""

from __future__ import annotations

from aws_cdk import Duration
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from infra.nag import acknowledge
from shared.resources import QueueSpec, queues

OUTBOX_DLQ_NAG_REASON = (
    "This queue is itself a dead-letter queue: the outbox pipe's DeadLetterConfig "
    "(not an SQS redrive policy, which is what the rule looks for)."
)


class Queues(Construct):
    def __init__(
        self, scope: Construct, construct_id: str, *, task_timeout_s: float, webhook_max_attempts: int
    ) -> None:
        super().__init__(scope, construct_id)
        # Each dead-letter queue comes before the queue that redrives into it (`shared.resources`).
        self._queues: dict[str, sqs.Queue] = {}
        for spec in queues(webhook_max_attempts=webhook_max_attempts).values():
            self._queues[spec.name] = self._queue(spec, task_timeout_s)
        self.tasks_dlq = self._queues["tasks-dlq"]
        self.tasks = self._queues["tasks"]
        self.task_finished_dlq = self._queues["task-finished-dlq"]
        self.task_finished = self._queues["task-finished"]
        self.webhooks_dlq = self._queues["webhooks-dlq"]
        self.webhooks = self._queues["webhooks"]
        self.outbox_dlq = self._queues["outbox-dlq"]
        acknowledge(self.outbox_dlq, "AwsSolutions-SQS3", OUTBOX_DLQ_NAG_REASON)

    def _queue(self, spec: QueueSpec, task_timeout_s: float) -> sqs.Queue:
        visibility = spec.visibility_s(task_timeout_s)
        dlq = self._queues[spec.dlq] if spec.dlq else None
        return sqs.Queue(
            self,
            spec.construct_id,
            encryption=sqs.QueueEncryption.SQS_MANAGED,
            enforce_ssl=True,
            retention_period=Duration.days(spec.retention_days),
            visibility_timeout=Duration.seconds(visibility) if visibility is not None else None,
            fifo=True if spec.fifo else None,
            content_based_deduplication=False if spec.fifo else None,
            deduplication_scope=sqs.DeduplicationScope.MESSAGE_GROUP if spec.fifo else None,
            fifo_throughput_limit=sqs.FifoThroughputLimit.PER_MESSAGE_GROUP_ID if spec.fifo else None,
            dead_letter_queue=sqs.DeadLetterQueue(queue=dlq, max_receive_count=spec.max_receives or 0) if dlq else None,
        )

    @property
    def by_name(self) -> dict[str, sqs.Queue]:
        """Every queue by its name in `shared.resources`."""
        return dict(self._queues)

    @property
    def dead_letter_queues(self) -> dict[str, sqs.Queue]:
        return {
            "tasks": self.tasks_dlq,
            "task-finished": self.task_finished_dlq,
            "webhooks": self.webhooks_dlq,
            "outbox": self.outbox_dlq,
        }
