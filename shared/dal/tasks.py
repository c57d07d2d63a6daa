"""The tasks table: one item per planned task (definition, status, attempt, result)."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

from shared.constants import TTL_ATTRIBUTE
from shared.dal.aws import client, from_item, to_item
from shared.dal.table import Update
from shared.dal.vendor_errors import domain_errors
from shared.models.plan import Task, TaskStatus
from shared.models.records import TaskRecord

Key = tuple[str, str]  # (buildId, taskId)


class TaskStore:
    def __init__(self, table: str, ttl_seconds: int | None = None) -> None:
        self.table = table
        self.ttl_seconds = ttl_seconds  # a plan's tasks expire this long after they were planned

    def put_plan(
        self, build_id: str, plan_id: str, tasks: list[Task], handed: Mapping[str, tuple[int, Task]] | None = None
    ) -> None:
        """Write the plan's task items. `handed`: tasks whose items the plan step wrote while the
        plan streamed (they may be running or done), each with the place and definition written
        then: only a place or definition the stored plan changed is updated."""
        handed = handed or {}
        for i, t in enumerate(tasks):
            if t.id in handed and handed[t.id] != (i, t):
                self.update(build_id, t.id, Update().set(order=i, task=t.model_dump(mode="json")))
        self._put_items(build_id, plan_id, [(i, t, None) for i, t in enumerate(tasks) if t.id not in handed])

    def tx_put_streamed(self, build_id: str, plan_id: str, tasks: list[tuple[int, Task]]) -> list[dict[str, Any]]:
        """Transaction entries putting the items of tasks handed to the dispatch state while the plan
        streams: `streamOrder` is the place in the order they were handed, and never changes (what a
        dispatch step reads then)."""
        return [{"Put": {"TableName": self.table, "Item": self._item(build_id, plan_id, i, t, i)}} for i, t in tasks]

    def _put_items(self, build_id: str, plan_id: str, tasks: list[tuple[int, Task, int | None]]) -> None:
        ddb = client("dynamodb")
        items = [{"PutRequest": {"Item": self._item(build_id, plan_id, i, t, streamed)}} for i, t, streamed in tasks]
        for start in range(0, len(items), 25):
            pending = {self.table: items[start : start + 25]}
            while pending:
                resp = ddb.batch_write_item(RequestItems=pending)
                pending = resp.get("UnprocessedItems") or {}

    def _item(self, build_id: str, plan_id: str, order: int, task: Task, streamed: int | None) -> dict[str, Any]:
        kept = {TTL_ATTRIBUTE: int(time.time()) + self.ttl_seconds} if self.ttl_seconds else {}
        return to_item(
            {
                "buildId": build_id,
                "taskId": task.id,
                "planId": plan_id,
                "order": order,
                "task": task.model_dump(mode="json"),
                "status": TaskStatus.pending.value,
                "attempt": 0,
                **({"streamOrder": streamed} if streamed is not None else {}),
                **kept,
            }
        )

    def get(self, build_id: str, task_id: str) -> TaskRecord | None:
        item = (
            client("dynamodb")
            .get_item(
                TableName=self.table, Key={"buildId": {"S": build_id}, "taskId": {"S": task_id}}, ConsistentRead=True
            )
            .get("Item")
        )
        return TaskRecord.model_validate(from_item(item)) if item else None

    def get_many(self, keys: list[Key]) -> tuple[dict[Key, TaskRecord], set[Key]]:
        """Items of this table by (buildId, taskId), strongly consistent, in as few requests as
        BatchGetItem allows (100 keys each): (the task records found, every key found). A key may
        name a file-index item (same table, `shared.dal.file_index`): it is only reported found."""
        records, found, _ = self._batch_get(keys, None)
        return records, found

    def get_many_with(
        self, keys: list[Key], table: str, others: list[dict[str, Any]]
    ) -> tuple[dict[Key, TaskRecord], set[Key], list[dict[str, Any]]]:
        """`get_many`, and the items of another table at `others` (keys in DynamoDB JSON; eventually
        consistent reads) in the same requests: (records, keys found, those other items found)."""
        return self._batch_get(keys, (table, others))

    def _batch_get(
        self, keys: list[Key], other: tuple[str, list[dict[str, Any]]] | None
    ) -> tuple[dict[Key, TaskRecord], set[Key], list[dict[str, Any]]]:
        ddb = client("dynamodb")
        out: dict[Key, TaskRecord] = {}
        present: set[Key] = set()
        found: list[dict[str, Any]] = []
        unique = list(dict.fromkeys(keys))
        others = other[1] if other is not None else []
        size = 100 - len(others)  # the other items ride in the first request
        for start in range(0, max(1, len(unique)), size):
            pending: dict[str, Any] = {}
            if unique:
                pending[self.table] = {
                    "Keys": [{"buildId": {"S": b}, "taskId": {"S": t}} for b, t in unique[start : start + size]],
                    "ConsistentRead": True,
                }
            if other is not None and others and start == 0:
                pending[other[0]] = {"Keys": others}
            while pending:
                resp = ddb.batch_get_item(RequestItems=pending)
                responses = resp.get("Responses") or {}
                for raw in responses.get(self.table) or []:
                    item = from_item(raw)
                    key = (str(item["buildId"]), str(item["taskId"]))
                    present.add(key)
                    if "task" in item:  # a task's item, not a file-index entry
                        out[key] = TaskRecord.model_validate(item)
                if other is not None:
                    found += [from_item(raw) for raw in responses.get(other[0]) or []]
                pending = resp.get("UnprocessedKeys") or {}
                if pending:
                    time.sleep(0.05)  # throttled: back off before asking for the rest
        return out, present, found

    def list(self, build_id: str, *, attributes: Sequence[str] | None = None) -> list[TaskRecord]:
        """The build's tasks in plan order; with `attributes` (paths like `task.input.targetPath`),
        only those parts of each item, with the record's required ones and `order`: the others
        read as their defaults."""
        ddb = client("dynamodb")
        kwargs: dict[str, Any] = {
            "TableName": self.table,
            "KeyConditionExpression": "buildId = :b",
            "ExpressionAttributeValues": {":b": {"S": build_id}},
            "ConsistentRead": True,
        }
        if attributes:
            whole = {path for path in attributes if "." not in path}  # a path may not overlap its parent
            required = [path for path in TaskRecord.REQUIRED if path.split(".")[0] not in whole]
            kwargs.update(_projection(["order", *required, *attributes]))
        out: list[TaskRecord] = []
        while True:
            resp = ddb.query(**kwargs)
            out.extend(TaskRecord.model_validate(from_item(i)) for i in resp.get("Items") or [])
            if not resp.get("LastEvaluatedKey"):
                break
            kwargs["ExclusiveStartKey"] = resp["LastEvaluatedKey"]
        out.sort(key=lambda t: t.order)
        return out

    def update(self, build_id: str, task_id: str, update: Update) -> None:
        with domain_errors(f"task {task_id} is not in the expected state"):
            client("dynamodb").update_item(**update.kwargs(self.table, self.key(build_id, task_id)))

    def delete(self, build_id: str, task_id: str) -> None:
        client("dynamodb").delete_item(TableName=self.table, Key=to_item(self.key(build_id, task_id)))

    def tx_update(self, build_id: str, task_id: str, update: Update) -> dict[str, Any]:
        return update.tx(self.table, self.key(build_id, task_id))

    @staticmethod
    def key(build_id: str, task_id: str) -> dict[str, str]:
        return {"buildId": build_id, "taskId": task_id}


def _projection(paths: Sequence[str]) -> dict[str, Any]:
    """A ProjectionExpression naming each path segment by a placeholder (many are reserved words)."""
    names: dict[str, str] = {}
    for segment in dict.fromkeys(part for path in paths for part in path.split(".")):
        names[f"#p{len(names)}"] = segment
    placeholder = {segment: key for key, segment in names.items()}
    expression = ", ".join(".".join(placeholder[part] for part in path.split(".")) for path in dict.fromkeys(paths))
    return {"ProjectionExpression": expression, "ExpressionAttributeNames": names}
