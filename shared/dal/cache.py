"""The task result cache table: one item per cache key (the files an identical task wrote).

The cache is an optimisation: a read or a `put` that fails is logged and treated as a miss, never
as a task's failure. A task's completion writes its result's item in its own transaction
(`tx_put`), so that write commits, or is retried, with the completion.
"""

from __future__ import annotations

from typing import Any

from shared.constants import TTL_ATTRIBUTE
from shared.dal.aws import client, from_item, to_item
from shared.dal.vendor_errors import error_code
from shared.observability import logger


class ResultCache:
    def __init__(self, table: str) -> None:
        self.table = table

    def get(self, key: str) -> dict[str, Any] | None:
        """The item under `key` (`files`, and `expiresAt` in epoch seconds), or None."""
        try:
            item = client("dynamodb").get_item(TableName=self.table, Key={"cacheKey": {"S": key}}).get("Item")
        except Exception as exc:
            logger.warning("cache read failed", extra={"code": error_code(exc)})
            return None
        return from_item(item) if item else None

    def put(self, key: str, files: list[dict[str, Any]], expires_at: int) -> None:
        try:
            client("dynamodb").put_item(TableName=self.table, Item=self._item(key, files, expires_at))
        except Exception as exc:
            logger.warning("cache write failed", extra={"code": error_code(exc)})

    def tx_put(self, key: str, files: list[dict[str, Any]], expires_at: int) -> dict[str, Any]:
        """A transaction entry writing the item (no condition: it commits with the result it holds)."""
        return {"Put": {"TableName": self.table, "Item": self._item(key, files, expires_at)}}

    @staticmethod
    def _item(key: str, files: list[dict[str, Any]], expires_at: int) -> dict[str, Any]:
        return to_item({"cacheKey": key, "files": files, TTL_ATTRIBUTE: expires_at})
