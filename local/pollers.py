"""What the Lambda service does for queue and stream event sources, done by threads.

An SQS poller long-polls a queue, hands the handler a real SQS event, deletes what succeeded and
leaves the `batchItemFailures` (or the whole batch, if the handler raised) to come back after their
visibility timeout; SQS itself moves a message to its DLQ after `maxReceiveCount` receives. The
stream relay plays the EventBridge Pipe: INSERTs on the events table's stream go to the webhook
queue as the record itself, and every record read goes to `on_records` (the live feed of WebSocket
subscribers) first.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import Any

from local import invocations
from local.context import LocalContext
from local.moto_fixes import stream_written
from shared.dal.aws import client
from shared.dal.events import outbox_wants
from shared.observability import logger

Handler = Callable[[dict[str, Any], Any], Any]

MAX_MESSAGE_BYTES = 256 * 1024  # an SQS message, and an EventBridge Pipes event


def batches(bodies: list[str]) -> list[list[str]]:
    """SendMessageBatch groups: at most 10 messages and MAX_MESSAGE_BYTES in all, in order."""
    out: list[list[str]] = []
    size = 0
    for body in bodies:
        n = len(body.encode())
        if not out or len(out[-1]) == 10 or size + n > MAX_MESSAGE_BYTES:
            out.append([])
            size = 0
        out[-1].append(body)
        size += n
    return out


def sqs_record(message: dict[str, Any], queue_arn: str, region: str) -> dict[str, Any]:
    attrs = dict(message.get("Attributes") or {})
    attrs.update({k: v for k, v in (message.get("MessageSystemAttributes") or {}).items()})
    return {
        "messageId": message["MessageId"],
        "receiptHandle": message["ReceiptHandle"],
        "body": message["Body"],
        "attributes": attrs,
        "messageAttributes": {
            name: {
                "stringValue": v.get("StringValue"),
                "binaryValue": v.get("BinaryValue"),
                "stringListValues": [],
                "binaryListValues": [],
                "dataType": v.get("DataType", "String"),
            }
            for name, v in (message.get("MessageAttributes") or {}).items()
        },
        "md5OfBody": message.get("MD5OfBody", ""),
        "eventSource": "aws:sqs",
        "eventSourceARN": queue_arn,
        "awsRegion": region,
    }


class SqsPoller:
    def __init__(
        self,
        name: str,
        queue_url: str,
        queue_arn: str,
        handler: Callable[[], Handler],
        *,
        function_name: str,
        timeout_s: float,
        memory_mb: int = 512,
        batch_size: int = 1,
        workers: int = 1,
        region: str = "us-east-1",
    ) -> None:
        self.name = name
        self.queue_url = queue_url
        self.queue_arn = queue_arn
        self.handler = handler
        self.function_name = function_name
        self.timeout_s = timeout_s
        self.memory_mb = memory_mb
        self.abandoned = 0  # invocations stopped at their time limit
        self.batch_size = batch_size
        self.workers = workers
        self.region = region
        self.stop_event = threading.Event()
        self.threads: list[threading.Thread] = []
        self.inflight = 0
        self._lock = threading.Lock()

    def start(self) -> None:
        for i in range(self.workers):
            t = threading.Thread(target=self._run, name=f"{self.name}-{i}", daemon=True)
            t.start()
            self.threads.append(t)

    def stop(self) -> None:
        self.stop_event.set()

    def join(self, timeout: float = 5.0) -> None:
        for t in self.threads:
            t.join(timeout)

    def _run(self) -> None:
        sqs = client("sqs")
        while not self.stop_event.is_set():
            try:
                # A long poll, as Lambda's pollers do: it waits without spinning (local.moto_fixes).
                resp = sqs.receive_message(
                    QueueUrl=self.queue_url,
                    MaxNumberOfMessages=self.batch_size,
                    WaitTimeSeconds=1,
                    AttributeNames=["All"],
                    MessageAttributeNames=["All"],
                    MessageSystemAttributeNames=["All"],
                )
            except Exception:
                if self.stop_event.is_set():
                    return
                logger.exception("local poller receive failed", extra={"poller": self.name})
                time.sleep(0.5)
                continue
            messages = resp.get("Messages") or []
            if messages:
                self._invoke(sqs, messages)

    def _invoke(self, sqs: Any, messages: list[dict[str, Any]]) -> None:
        with self._lock:
            self.inflight += 1
        try:
            event = {"Records": [sqs_record(m, self.queue_arn, self.region) for m in messages]}
            failed: set[str]
            context = LocalContext(self.function_name, self.timeout_s, memory_limit_in_mb=self.memory_mb)
            outcome = invocations.invoke(self.handler(), event, context, self.timeout_s)
            if outcome.timed_out:  # as Lambda: abandoned; its messages stay in flight until visibility ends
                self.abandoned += 1
                logger.warning("local handler ran past its time limit and was stopped", extra={"poller": self.name})
                return
            if outcome.error is None:
                failed = {f["itemIdentifier"] for f in (outcome.result or {}).get("batchItemFailures", [])}
            else:  # the whole batch comes back after its visibility timeout
                logger.info(
                    "local handler failed its batch; it will be retried",
                    extra={"poller": self.name, "error": (str(outcome.error).splitlines() or [""])[0][:300]},
                )
                failed = {m["MessageId"] for m in messages}
            done = [m for m in messages if m["MessageId"] not in failed]
            if done:
                sqs.delete_message_batch(
                    QueueUrl=self.queue_url,
                    Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(done)],
                )
        finally:
            with self._lock:
                self.inflight -= 1


class StreamSignal:
    """Says "a DynamoDB stream was written": moto's (`moto_fixes.stream_written`) in this process, or the
    backends process's when moto runs there (`wait` and `wake` then ask it)."""

    def __init__(
        self, wait: Callable[[float], bool] | None = None, wake: Callable[[], None] | None = None
    ) -> None:
        self._wait, self._wake = wait, wake

    def wait(self, timeout_s: float) -> bool:
        if self._wait is not None:
            return self._wait(timeout_s)
        written = stream_written.wait(timeout_s)
        stream_written.clear()
        return written

    def wake(self) -> None:
        if self._wake is not None:
            self._wake()
        else:
            stream_written.set()


class StreamRelay:
    """Plays the EventBridge Pipe: events-table stream INSERTs → webhook queue.

    It sleeps until the stream is written (`signal`), then waits `batch_s` so one read takes a burst
    of records (the Pipe batches too), and reads until the stream is drained."""

    def __init__(
        self,
        stream_arn: str,
        queue_url: str,
        *,
        batch_s: float = 0.02,
        on_records: Callable[[list[dict[str, Any]]], None] | None = None,
        signal: StreamSignal | None = None,
    ) -> None:
        self.stream_arn = stream_arn
        self.queue_url = queue_url
        self.batch_s = batch_s
        self.on_records = on_records
        self.signal = signal or StreamSignal()
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self._run, name="stream-relay", daemon=True)
        self.relayed = 0

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.stop_event.set()
        try:
            self.signal.wake()
        except Exception:  # the backends process is gone: the relay's wait ends on its own
            logger.debug("local stream relay: no wake-up sent")

    def join(self, timeout: float = 5.0) -> None:
        self.thread.join(timeout)

    def _run(self) -> None:
        streams = client("dynamodbstreams")
        sqs = client("sqs")
        iterators: dict[str, str | None] = {}
        described = 0.0
        while not self.stop_event.is_set():
            try:
                if time.monotonic() - described > 1.0:  # shards change rarely: look now and then
                    described = time.monotonic()
                    shards = streams.describe_stream(StreamArn=self.stream_arn)["StreamDescription"]["Shards"]
                    for shard in shards:
                        sid = shard["ShardId"]
                        if sid not in iterators:
                            iterators[sid] = streams.get_shard_iterator(
                                StreamArn=self.stream_arn,
                                ShardId=sid,
                                ShardIteratorType="TRIM_HORIZON",
                            )["ShardIterator"]
                read = 0
                for sid, it in list(iterators.items()):
                    if not it:
                        continue
                    resp = streams.get_records(ShardIterator=it, Limit=1000)
                    iterators[sid] = resp.get("NextShardIterator")
                    records = resp.get("Records") or []
                    read += len(records)
                    if records and self.on_records is not None:
                        try:
                            self.on_records(records)
                        except Exception:
                            logger.exception("local stream listener failed")
                    inserts = [json.dumps(r, default=str) for r in records if outbox_wants(r)]
                    for batch in batches(inserts):
                        sqs.send_message_batch(
                            QueueUrl=self.queue_url,
                            Entries=[{"Id": str(i), "MessageBody": body} for i, body in enumerate(batch)],
                        )
                    self.relayed += len(inserts)
                if read:
                    continue  # there may be more: read again before sleeping
                self.signal.wait(1.0)
                self.stop_event.wait(self.batch_s)
            except Exception:
                if self.stop_event.is_set():
                    return
                logger.exception("local stream relay failed; retrying")
                self.stop_event.wait(0.2)
