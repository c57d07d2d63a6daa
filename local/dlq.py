"""Dead webhook deliveries: list them and send them again, on AWS or on a running `stepwise serve`.

The same boto3 calls serve both: on AWS the queue comes from the stack's outputs or its URL; locally
from the endpoint `stepwise serve` publishes (its moto server) in the state file.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

STATE_DIR_ENV = "STEPWISE_STATE_DIR"


def state_file() -> Path:
    return Path(os.environ.get(STATE_DIR_ENV) or Path.home() / ".stepwise") / "serve.json"


def write_state(state: dict[str, Any]) -> Path:
    path = state_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(state, indent=2))
    return path


def read_state() -> dict[str, Any] | None:
    path = state_file()
    try:
        return json.loads(path.read_text())  # type: ignore[no-any-return]
    except (OSError, ValueError):
        return None


@dataclass
class Target:
    sqs: Any
    dlq_url: str
    source_url: str


@dataclass
class DeadDelivery:
    message_id: str
    event_id: str
    event_type: str
    build_id: str
    seq: int | None
    reason: str | None
    receive_count: int


def _client(endpoint: str | None, region: str | None) -> Any:
    import boto3

    kwargs: dict[str, Any] = {"region_name": region or os.environ.get("AWS_REGION") or "us-east-1"}
    if endpoint:
        kwargs.update(endpoint_url=endpoint, aws_access_key_id="local", aws_secret_access_key="local")
    return boto3.client("sqs", **kwargs)


def resolve(*, stack: str | None, queue_url: str | None, endpoint: str | None, region: str | None) -> Target:
    """Find the webhook DLQ and the queue it drains to."""
    if stack:
        import boto3

        cfn = boto3.client("cloudformation", region_name=region) if region else boto3.client("cloudformation")
        outputs = {
            o["OutputKey"]: o["OutputValue"]
            for o in cfn.describe_stacks(StackName=stack)["Stacks"][0].get("Outputs", [])
        }
        dlq = next((v for k, v in outputs.items() if "webhook" in k.lower() and "dlq" in k.lower()), None)
        if not dlq:
            raise LookupError(f"stack {stack} has no webhook DLQ output (outputs: {', '.join(sorted(outputs))})")
        queue_url = dlq
    elif not queue_url:
        state = read_state() if not endpoint else None
        if not endpoint:
            if not state:
                raise LookupError("no running `stepwise serve` found; pass --stack, --queue-url or --endpoint")
            endpoint = state["endpoint"]
        sqs = _client(endpoint, region)
        urls = sqs.list_queues(QueueNamePrefix="stepwise-local-webhooks-dlq").get("QueueUrls") or []
        if not urls:
            raise LookupError(f"no webhook DLQ at {endpoint}")
        queue_url = urls[0]
    sqs = _client(endpoint, region)
    sources = sqs.list_dead_letter_source_queues(QueueUrl=queue_url).get("queueUrls") or []
    if not sources:
        raise LookupError(f"{queue_url} is not the dead-letter queue of any queue")
    return Target(sqs=sqs, dlq_url=queue_url, source_url=sources[0])


def _describe(message: dict[str, Any]) -> DeadDelivery:
    event: dict[str, Any] = {}
    try:
        record = json.loads(message["Body"])
        image = (record.get("dynamodb") or {}).get("NewImage") or {}
        from boto3.dynamodb.types import TypeDeserializer

        d = TypeDeserializer()
        event = {k: d.deserialize(v) for k, v in image.items()}
    except (ValueError, TypeError, KeyError):
        pass
    reason = (message.get("MessageAttributes") or {}).get("reason", {}).get("StringValue")
    seq = event.get("seq")
    return DeadDelivery(
        message_id=message["MessageId"],
        event_id=str(event.get("id", "?")),
        event_type=str(event.get("type", "?")),
        build_id=str(event.get("buildId", "?")),
        seq=int(seq) if seq is not None else None,
        reason=reason,
        receive_count=int((message.get("Attributes") or {}).get("ApproximateReceiveCount", 0)),
    )


def list_dead(target: Target, limit: int = 100) -> list[DeadDelivery]:
    """Peek at the DLQ: messages are received with a short visibility timeout and left in place."""
    seen: dict[str, DeadDelivery] = {}
    for _ in range(max(1, limit // 10 + 1)):
        resp = target.sqs.receive_message(
            QueueUrl=target.dlq_url,
            MaxNumberOfMessages=10,
            VisibilityTimeout=2,
            AttributeNames=["All"],
            MessageAttributeNames=["All"],
            WaitTimeSeconds=0,
        )
        batch = resp.get("Messages") or []
        if not batch:
            break
        for m in batch:
            seen.setdefault(m["MessageId"], _describe(m))
        if len(seen) >= limit:
            break
    return list(seen.values())[:limit]


def redrive(target: Target, limit: int | None = None) -> int:
    """Move dead messages back to the webhook queue (send first, then delete: nothing is lost)."""
    moved = 0
    while limit is None or moved < limit:
        resp = target.sqs.receive_message(
            QueueUrl=target.dlq_url,
            MaxNumberOfMessages=10,
            VisibilityTimeout=30,
            MessageAttributeNames=["All"],
            WaitTimeSeconds=0,
        )
        batch = resp.get("Messages") or []
        if not batch:
            break
        for m in batch:
            target.sqs.send_message(QueueUrl=target.source_url, MessageBody=m["Body"])
            target.sqs.delete_message(QueueUrl=target.dlq_url, ReceiptHandle=m["ReceiptHandle"])
            moved += 1
    return moved
