"""SQS queues, each with its dead-letter queue. SSE-SQS encryption (no key grants needed by the
pipe or the consumers), TLS-only access policies, 14-day retention on every DLQ.

Visibility timeouts are 6x the consuming function's timeout (the Lambda guidance for SQS event
sources), so a batch that is still running is never handed to a second consumer; the values and
receive counts are `shared.limits`, which the local runtime runs with too.
"""

from __future__ import annotations

from aws_cdk import Duration
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from infra.nag import acknowledge
from shared.limits import TASK_FINISHED_DLQ_MAX_RECEIVES, TASKS_DLQ_MAX_RECEIVES, VISIBILITY_FACTOR

DLQ_RETENTION = Duration.days(14)


class Queues(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        task_function_timeout: Duration,
        dispatch_function_timeout: Duration,
        webhook_function_timeout: Duration,
        webhook_max_attempts: int,
    ) -> None:
        super().__init__(scope, construct_id)

        # Tasks to run. Each attempt is its own message (a retry is re-sent with a delay), so the
        # receive count only counts crashes of one attempt: after 5 the message moves to the DLQ,
        # where the dispatcher marks the task failed.
        self.tasks_dlq = self._queue(
            "TasksDlq", retention=DLQ_RETENTION, visibility=_visibility(dispatch_function_timeout)
        )
        self.tasks = self._queue(
            "Tasks",
            visibility=_visibility(task_function_timeout),
            retention=Duration.days(4),
            dlq=(self.tasks_dlq, TASKS_DLQ_MAX_RECEIVES),
        )

        # "Task finished" notices for the dispatcher: FIFO per build (MessageGroupId = buildId) with
        # explicit deduplication ids, high-throughput mode (dedup and throughput per message group).
        self.task_finished_dlq = self._queue("TaskFinishedDlq", fifo=True, retention=DLQ_RETENTION)
        self.task_finished = self._queue(
            "TaskFinished",
            fifo=True,
            visibility=_visibility(dispatch_function_timeout),
            retention=Duration.days(4),
            dlq=(self.task_finished_dlq, TASK_FINISHED_DLQ_MAX_RECEIVES),
        )

        # Webhook deliveries, fed by the events-table pipe. The consumer backs off by changing the
        # message's visibility, so the receive count is the attempt count: the DLQ takes a message
        # after WEBHOOK_MAX_ATTEMPTS attempts.
        self.webhooks_dlq = self._queue("WebhooksDlq", retention=DLQ_RETENTION)
        self.webhooks = self._queue(
            "Webhooks",
            visibility=_visibility(webhook_function_timeout),
            retention=Duration.days(14),
            dlq=(self.webhooks_dlq, webhook_max_attempts),
        )

        # Stream records the pipe could not put on the webhook queue (after its own retries).
        self.outbox_dlq = self._queue("OutboxDlq", retention=DLQ_RETENTION)
        acknowledge(
            self.outbox_dlq,
            "AwsSolutions-SQS3",
            "This queue is itself a dead-letter queue: the outbox pipe's DeadLetterConfig "
            "(not an SQS redrive policy, which is what the rule looks for).",
        )

    def _queue(
        self,
        construct_id: str,
        *,
        retention: Duration,
        visibility: Duration | None = None,
        fifo: bool = False,
        dlq: tuple[sqs.IQueue, int] | None = None,
    ) -> sqs.Queue:
        return sqs.Queue(
            self,
            construct_id,
            encryption=sqs.QueueEncryption.SQS_MANAGED,
            enforce_ssl=True,
            retention_period=retention,
            visibility_timeout=visibility,
            fifo=True if fifo else None,
            content_based_deduplication=False if fifo else None,
            deduplication_scope=sqs.DeduplicationScope.MESSAGE_GROUP if fifo else None,
            fifo_throughput_limit=sqs.FifoThroughputLimit.PER_MESSAGE_GROUP_ID if fifo else None,
            dead_letter_queue=sqs.DeadLetterQueue(queue=dlq[0], max_receive_count=dlq[1]) if dlq else None,
        )

    @property
    def dead_letter_queues(self) -> dict[str, sqs.Queue]:
        return {
            "tasks": self.tasks_dlq,
            "task-finished": self.task_finished_dlq,
            "webhooks": self.webhooks_dlq,
            "outbox": self.outbox_dlq,
        }


def _visibility(function_timeout: Duration) -> Duration:
    return Duration.seconds(VISIBILITY_FACTOR * function_timeout.to_seconds())
