"""The builds table: one item per build (status, options, plan summary, dispatch state)."""

from __future__ import annotations

from typing import Any

from shared.constants import BUILDS_BY_OWNER_INDEX
from shared.dal.aws import client, from_item, to_item
from shared.dal.table import Update
from shared.dal.vendor_errors import domain_errors
from shared.errors import NotFound
from shared.models.build import BuildStatus
from shared.models.records import BuildRecord


class BuildStore:
    def __init__(self, table: str) -> None:
        self.table = table

    def create(self, item: dict[str, Any]) -> None:
        client("dynamodb").put_item(
            TableName=self.table, Item=to_item(item), ConditionExpression="attribute_not_exists(buildId)"
        )

    def get(self, build_id: str, *, attributes: list[str] | None = None) -> BuildRecord | None:
        """The build, strongly consistent; with `attributes`, only those (and the record's required
        ones) are read: the others read as their defaults."""
        kwargs: dict[str, Any] = {"TableName": self.table, "Key": {"buildId": {"S": build_id}}, "ConsistentRead": True}
        if attributes:
            wanted = dict.fromkeys([*BuildRecord.REQUIRED, *attributes])
            kwargs["ProjectionExpression"] = ", ".join(f"#{a}" for a in wanted)
            kwargs["ExpressionAttributeNames"] = {f"#{a}": a for a in wanted}
        item = client("dynamodb").get_item(**kwargs).get("Item")
        return BuildRecord.model_validate(from_item(item)) if item else None

    def require(self, build_id: str) -> BuildRecord:
        build = self.get(build_id)
        if build is None:
            raise NotFound(f"build {build_id} not found")
        return build

    def get_owned(self, build_id: str, owner: str) -> BuildRecord:
        """The build if `owner` owns it; otherwise NotFound, exactly like a missing build."""
        build = self.get(build_id)
        if build is None or build.ownerId != owner:
            raise NotFound(f"build {build_id} not found")
        return build

    def update(self, build_id: str, update: Update) -> None:
        with domain_errors(f"build {build_id} is not in the expected state"):
            client("dynamodb").update_item(**update.kwargs(self.table, {"buildId": build_id}))

    def tx_create(self, item: dict[str, Any]) -> dict[str, Any]:
        """A transaction item that writes a new build (it fails if the id is taken)."""
        return {
            "Put": {
                "TableName": self.table,
                "Item": to_item(item),
                "ConditionExpression": "attribute_not_exists(buildId)",
            }
        }

    def tx_update(self, build_id: str, update: Update) -> dict[str, Any]:
        return update.tx(self.table, {"buildId": build_id})

    def tx_still_running(self, build_id: str, update: Update | None = None) -> dict[str, Any]:
        """A transaction item that commits only while the build executes (or still plans, once its
        plan step started tasks as the plan streamed: `streamedTasks`) and nothing halted it:
        `update` with that condition added, or the bare check."""
        running = (update or Update()).when(
            "({status} = :executing OR ({status} = :planning AND attribute_exists({streamedTasks})))"
            " AND attribute_not_exists({haltedBy})",
            executing=BuildStatus.executing.value,
            planning=BuildStatus.planning.value,
        )
        return self.tx_update(build_id, running) if update else running.tx_check(self.table, {"buildId": build_id})

    def list_by_owner(self, owner: str, limit: int, cursor: str | None) -> tuple[list[BuildRecord], str | None]:
        kwargs: dict[str, Any] = {
            "TableName": self.table,
            "IndexName": BUILDS_BY_OWNER_INDEX,
            "KeyConditionExpression": "ownerId = :o",
            "ExpressionAttributeValues": {":o": {"S": owner}},
            "ScanIndexForward": False,
            "Limit": limit,
        }
        if cursor:
            kwargs["ExclusiveStartKey"] = _decode_cursor(cursor, owner)
        resp = client("dynamodb").query(**kwargs)
        nxt = resp.get("LastEvaluatedKey")
        builds = [BuildRecord.model_validate(from_item(i)) for i in resp.get("Items") or []]
        return builds, (_encode_cursor(from_item(nxt)) if nxt else None)


def _encode_cursor(key: dict[str, Any]) -> str:
    """A page position: `<createdAt>-<buildId>`. The owner is never in it: it comes from the caller."""
    return f"{int(key['createdAt'])}-{key['buildId']}"


def _decode_cursor(cursor: str, owner: str) -> dict[str, Any]:
    from shared.errors import InvalidInput

    created, sep, build_id = cursor.partition("-")
    if not sep or not created.isdigit() or not build_id:
        raise InvalidInput("cursor is not valid", details=[{"field": "cursor", "message": "not a page position"}])
    return {"ownerId": {"S": owner}, "createdAt": {"N": str(int(created))}, "buildId": {"S": build_id}}
