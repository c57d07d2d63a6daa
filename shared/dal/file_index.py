"""Which version of each path a build's completed tasks wrote: one item per path, so a file is read
by its path with one lookup and a build's files are listed in proportion to the files, not its tasks.

The items live in the tasks table under their own partition, `{buildId}#files`, sort key the path
(`taskId` holds it): a build's task items (partition `{buildId}`) never include them, and the table's
grants and retention already cover them. They are written in the transaction that completes the task
that wrote the files, so a path is listed exactly when a completed task wrote it, with the version
the last completed writer left.
"""

from __future__ import annotations

import time
from typing import Any

from shared.constants import TTL_ATTRIBUTE
from shared.dal.aws import client, from_item, query_items, to_item
from shared.models.plan import FileInfo

_SUFFIX = "#files"
IN_TRANSACTION = 24  # files per task indexed inside the completing transaction (its limit is 100 actions)


class FileIndex:
    def __init__(self, table: str, ttl_seconds: int | None = None) -> None:
        self.table = table
        self.ttl_seconds = ttl_seconds

    @staticmethod
    def partition(build_id: str) -> str:
        return build_id + _SUFFIX

    def _item(self, build_id: str, info: FileInfo, completed_at: int) -> dict[str, Any]:
        kept = {TTL_ATTRIBUTE: int(time.time()) + self.ttl_seconds} if self.ttl_seconds else {}
        return to_item(
            {
                "buildId": self.partition(build_id),
                "taskId": info.path,
                "size": info.size,
                "sha256": info.sha256,
                "writer": info.taskId,
                "completedAt": completed_at,
                **kept,
            }
        )

    def tx_puts(self, build_id: str, infos: list[FileInfo], completed_at: int) -> list[dict[str, Any]]:
        """Transaction entries indexing `infos` (at most IN_TRANSACTION; see `put_rest`)."""
        return [
            {"Put": {"TableName": self.table, "Item": self._item(build_id, info, completed_at)}}
            for info in infos[:IN_TRANSACTION]
        ]

    def put_rest(self, build_id: str, infos: list[FileInfo], completed_at: int) -> None:
        """Index what did not fit in the completing transaction, once that transaction committed."""
        rest = [{"PutRequest": {"Item": self._item(build_id, i, completed_at)}} for i in infos[IN_TRANSACTION:]]
        ddb = client("dynamodb")
        for start in range(0, len(rest), 25):
            pending: dict[str, Any] = {self.table: rest[start : start + 25]}
            while pending:
                pending = ddb.batch_write_item(RequestItems=pending).get("UnprocessedItems") or {}

    def get(self, build_id: str, path: str) -> FileInfo | None:
        item = (
            client("dynamodb")
            .get_item(
                TableName=self.table,
                Key={"buildId": {"S": self.partition(build_id)}, "taskId": {"S": path}},
                ConsistentRead=True,
            )
            .get("Item")
        )
        return _info(from_item(item)) if item else None

    def list(self, build_id: str) -> list[FileInfo]:
        """Every indexed path of the build, in path order (the sort key's)."""
        kwargs: dict[str, Any] = {
            "TableName": self.table,
            "KeyConditionExpression": "buildId = :b",
            "ExpressionAttributeValues": {":b": {"S": self.partition(build_id)}},
            "ConsistentRead": True,
        }
        return [_info(from_item(i)) for i in query_items(**kwargs)]


def _info(item: dict[str, Any]) -> FileInfo:
    return FileInfo(path=item["taskId"], size=int(item["size"]), sha256=item["sha256"], taskId=item["writer"])
