"""How big what a build writes gets: the largest DynamoDB item, SQS message and event.

`SizeProbe` hooks the process's boto3 clients (botocore's `provide-client-params` event, so every
call of every thread is seen before it is sent) and keeps the largest item written by a put and the
largest message sent. An update's item is only known once written: `measure_updates()` reads each
updated item back (call it when the build has ended; a build's items only grow while it runs).
Used by the size tests and `bench/bench_size.py`.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from typing import Any

from shared.dal.aws import client


def attribute_size(value: dict[str, Any]) -> int:
    """DynamoDB's size of one attribute value in bytes, by its item-size rules."""
    ((kind, v),) = value.items()
    if kind == "S":
        return len(v.encode())
    if kind == "N":
        return len(str(v).lstrip("-").replace(".", "").lstrip("0")) // 2 + 2
    if kind == "B":
        return len(v)
    if kind in ("BOOL", "NULL"):
        return 1
    if kind == "M":
        return 3 + sum(len(k.encode()) + attribute_size(x) + 1 for k, x in v.items())
    if kind == "L":
        return 3 + sum(attribute_size(x) + 1 for x in v)
    if kind in ("SS", "NS", "BS"):
        return sum(len(str(x)) for x in v)
    return len(json.dumps(v))


def item_size(item: dict[str, Any]) -> int:
    """DynamoDB's size of an item (attribute names and values) in bytes."""
    return sum(len(k.encode()) + attribute_size(v) for k, v in item.items())


@dataclass
class Largest:
    bytes: int = 0
    what: str = ""

    def offer(self, size: int, what: str) -> None:
        if size > self.bytes:
            self.bytes, self.what = size, what


@dataclass
class SizeProbe:
    item: Largest = field(default_factory=Largest)
    message: Largest = field(default_factory=Largest)
    items_seen: int = 0
    messages_seen: int = 0
    _updated: dict[str, tuple[str, dict[str, Any]]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def attach(self) -> SizeProbe:
        for service in ("dynamodb", "sqs"):
            client(service).meta.events.register(f"provide-client-params.{service}", self._seen)
        return self

    def detach(self) -> None:
        for service in ("dynamodb", "sqs"):
            client(service).meta.events.unregister(f"provide-client-params.{service}", self._seen)

    def _seen(self, params: dict[str, Any], model: Any, **_: Any) -> None:
        op = model.name
        with self._lock:
            if op == "PutItem":
                self._put(params["TableName"], params["Item"])
            elif op == "BatchWriteItem":
                for table, requests in params["RequestItems"].items():
                    for r in requests:
                        if "PutRequest" in r:
                            self._put(table, r["PutRequest"]["Item"])
            elif op == "TransactWriteItems":
                for entry in params["TransactItems"]:
                    if "Put" in entry:
                        self._put(entry["Put"]["TableName"], entry["Put"]["Item"])
                    elif "Update" in entry:
                        self._update(entry["Update"]["TableName"], entry["Update"]["Key"])
            elif op == "UpdateItem":
                self._update(params["TableName"], params["Key"])
            elif op == "SendMessage":
                self._message(params["QueueUrl"], params)
            elif op == "SendMessageBatch":
                for entry in params["Entries"]:
                    self._message(params["QueueUrl"], entry)

    def _put(self, table: str, item: dict[str, Any]) -> None:
        self.items_seen += 1
        self.item.offer(item_size(item), f"{table} item {_key_text(item)}")

    def _update(self, table: str, key: dict[str, Any]) -> None:
        self._updated[json.dumps([table, key], sort_keys=True)] = (table, key)

    def _message(self, queue_url: str, entry: dict[str, Any]) -> None:
        # SQS counts the body and each attribute's name, type and value
        size = len(entry.get("MessageBody", "").encode())
        for name, attr in (entry.get("MessageAttributes") or {}).items():
            size += len(name) + len(attr.get("DataType", "")) + len(str(attr.get("StringValue", "")))
        self.messages_seen += 1
        self.message.offer(size, f"message to {queue_url.rsplit('/', 1)[-1]}")

    def measure_updates(self) -> None:
        """Read every item an update wrote and size it as it is now."""
        with self._lock:
            updated = list(self._updated.values())
            self._updated.clear()
        ddb = client("dynamodb")
        for table, key in updated:
            item = ddb.get_item(TableName=table, Key=key, ConsistentRead=True).get("Item")
            if item:
                with self._lock:
                    self.items_seen += 1
                    self.item.offer(item_size(item), f"{table} item {_key_text(item)} (updated)")


def _key_text(item: dict[str, Any]) -> str:
    parts = [str(next(iter(item[k].values()))) for k in ("buildId", "taskId", "seq", "cacheKey", "id") if k in item]
    return "/".join(parts)[:120]


def limit_plan(n: int, tag: str) -> list[dict[str, Any]]:
    """A plan of `n` tasks with every field at its limit: 64-character ids, 200-character names,
    2,000-character descriptions, long target paths. A tree (task i after task (i-1)//4, so a wide
    window fills), whose last task also waits for the 50 before it (a long `dependsOn`)."""
    from shared.models.plan import MAX_TASK_DESCRIPTION_LENGTH, MAX_TASK_ID_LENGTH, MAX_TASK_NAME_LENGTH

    ids = [f"{tag}-{i:04d}-".ljust(MAX_TASK_ID_LENGTH, "x") for i in range(n)]
    tasks = []
    for i, task_id in enumerate(ids):
        deps = [ids[(i - 1) // 4]] if i else []
        if i == n - 1 and n > 2:
            deps = list(dict.fromkeys([*deps, *ids[max(1, n - 51) : n - 1]]))
        tasks.append(
            {
                "id": task_id,
                "type": "create_file",
                "name": f"Write part {i} of {tag} ".ljust(MAX_TASK_NAME_LENGTH, "n"),
                "description": f"Part {i}: ".ljust(MAX_TASK_DESCRIPTION_LENGTH, "d"),
                "estimatedDuration": 10,
                "priority": 5,
                "input": {
                    "prompt": f"{tag}: write part {i}",
                    "targetPath": f"{tag}/{'long-directory-name/' * 5}{task_id}.ts",
                    "dependencies": deps,
                },
            }
        )
    return tasks
