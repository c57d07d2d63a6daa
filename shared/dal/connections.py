"""The connections table (AWS WebSocket API): who is connected, and which builds each connection
watches, with how far each subscription has been delivered.

Items, keyed (pk, sk):
- a connection, `("connection#<connectionId>", "connection")`: its owner (the Cognito `sub`),
  written on `$connect`;
- a subscription, `(buildId, connectionId)`: `delivered` (highest seq pushed) and a lease
  (`leaseHolder`, `leaseUntil` epoch ms). Only the lease holder pushes, so a subscription's frames
  leave in seq order even when the subscribe handler and the broadcaster run at once. A build's
  subscribers are one strongly consistent Query, so a broadcast never misses a subscription that
  was written before it looked.
Every item has `expiresAt` (epoch s, the table's TTL): API Gateway ends a connection after 2 hours,
so one whose `$disconnect` never ran is forgotten anyway. The sparse index `byConnection`
(connectionId; subscriptions only) finds a connection's subscriptions on `$disconnect`.
"""

from __future__ import annotations

from typing import Any

from shared.constants import CONNECTIONS_BY_CONNECTION_INDEX as BY_CONNECTION_INDEX
from shared.constants import TTL_ATTRIBUTE
from shared.dal.aws import client, query_items
from shared.dal.vendor_errors import is_conditional_failure

CONNECTION_SK = "connection"
TTL_SECONDS = 3 * 3600  # API Gateway closes any connection after 2 h


def _connection_key(connection_id: str) -> dict[str, Any]:
    return {"pk": {"S": f"connection#{connection_id}"}, "sk": {"S": CONNECTION_SK}}


def _subscription_key(connection_id: str, build_id: str) -> dict[str, Any]:
    return {"pk": {"S": build_id}, "sk": {"S": connection_id}}


class ConnectionStore:
    def __init__(self, table: str) -> None:
        self.table = table

    # --- connections ---------------------------------------------------------------------------
    def connect(self, connection_id: str, owner: str, now_s: int) -> None:
        client("dynamodb").put_item(
            TableName=self.table,
            Item={
                **_connection_key(connection_id),
                "ownerId": {"S": owner},
                "connectedAt": {"N": str(now_s)},
                TTL_ATTRIBUTE: {"N": str(now_s + TTL_SECONDS)},
            },
        )

    def owner(self, connection_id: str) -> str | None:
        item = (
            client("dynamodb")
            .get_item(TableName=self.table, Key=_connection_key(connection_id), ConsistentRead=True)
            .get("Item")
        )
        return item["ownerId"]["S"] if item else None

    def forget(self, connection_id: str) -> int:
        """Delete the connection and its subscriptions; returns how many items went. (The index is
        eventually consistent: a subscription written a moment ago may stay until its TTL, and the
        broadcaster drops it on its first GoneException.)"""
        ddb = client("dynamodb")
        keys: list[dict[str, Any]] = [_connection_key(connection_id)]
        kwargs: dict[str, Any] = {
            "TableName": self.table,
            "IndexName": BY_CONNECTION_INDEX,
            "KeyConditionExpression": "connectionId = :c",
            "ExpressionAttributeValues": {":c": {"S": connection_id}},
        }
        keys += [{"pk": i["pk"], "sk": i["sk"]} for i in query_items(**kwargs)]
        for start in range(0, len(keys), 25):
            pending: dict[str, Any] = {self.table: [{"DeleteRequest": {"Key": k}} for k in keys[start : start + 25]]}
            for _ in range(10):
                pending = ddb.batch_write_item(RequestItems=pending).get("UnprocessedItems") or {}
                if not pending:
                    break
        return len(keys)

    # --- subscriptions -------------------------------------------------------------------------
    def subscription_count(self, connection_id: str) -> int:
        resp = client("dynamodb").query(
            TableName=self.table,
            IndexName=BY_CONNECTION_INDEX,
            KeyConditionExpression="connectionId = :c",
            ExpressionAttributeValues={":c": {"S": connection_id}},
            Select="COUNT",
        )
        return int(resp.get("Count", 0))

    def is_subscribed(self, connection_id: str, build_id: str) -> bool:
        item = (
            client("dynamodb")
            .get_item(
                TableName=self.table,
                Key=_subscription_key(connection_id, build_id),
                ProjectionExpression="sk",
                ConsistentRead=True,
            )
            .get("Item")
        )
        return item is not None

    def subscribe(
        self,
        connection_id: str,
        build_id: str,
        *,
        owner: str,
        after: int,
        holder: str,
        now_ms: int,
        lease_ms: int,
        force: bool = False,
    ) -> bool:
        """(Re)start a subscription at `after`, its lease held by `holder`. Refused (False) while
        another holder's lease runs, unless `force`."""
        kwargs: dict[str, Any] = {
            "TableName": self.table,
            "Item": {
                **_subscription_key(connection_id, build_id),
                "connectionId": {"S": connection_id},
                "buildId": {"S": build_id},
                "ownerId": {"S": owner},
                "delivered": {"N": str(after)},
                "leaseHolder": {"S": holder},
                "leaseUntil": {"N": str(now_ms + lease_ms)},
                TTL_ATTRIBUTE: {"N": str(now_ms // 1000 + TTL_SECONDS)},
            },
        }
        if not force:
            kwargs["ConditionExpression"] = "attribute_not_exists(sk) OR leaseUntil < :now"
            kwargs["ExpressionAttributeValues"] = {":now": {"N": str(now_ms)}}
        try:
            client("dynamodb").put_item(**kwargs)
        except Exception as exc:
            if is_conditional_failure(exc):
                return False
            raise
        return True

    def unsubscribe(self, connection_id: str, build_id: str) -> None:
        client("dynamodb").delete_item(TableName=self.table, Key=_subscription_key(connection_id, build_id))

    def acquire(self, connection_id: str, build_id: str, *, holder: str, now_ms: int, lease_ms: int) -> int | None:
        """Take the subscription's lease; returns its `delivered`, or None when the subscription is
        gone or another holder's lease runs (that holder looks for new events after releasing)."""
        try:
            resp = client("dynamodb").update_item(
                TableName=self.table,
                Key=_subscription_key(connection_id, build_id),
                UpdateExpression="SET leaseHolder = :h, leaseUntil = :u",
                ConditionExpression="attribute_exists(sk) AND leaseUntil < :now",
                ExpressionAttributeValues={
                    ":h": {"S": holder},
                    ":u": {"N": str(now_ms + lease_ms)},
                    ":now": {"N": str(now_ms)},
                },
                ReturnValues="ALL_NEW",
            )
        except Exception as exc:
            if is_conditional_failure(exc):
                return None
            raise
        return int(resp["Attributes"]["delivered"]["N"])

    def release(self, connection_id: str, build_id: str, *, holder: str, delivered: int) -> bool:
        """Record progress and free the lease; False when the lease was not ours any more
        (unsubscribed, resubscribed, or taken over after expiring)."""
        try:
            client("dynamodb").update_item(
                TableName=self.table,
                Key=_subscription_key(connection_id, build_id),
                UpdateExpression="SET delivered = :d, leaseUntil = :zero REMOVE leaseHolder",
                ConditionExpression="leaseHolder = :h",
                ExpressionAttributeValues={":d": {"N": str(delivered)}, ":zero": {"N": "0"}, ":h": {"S": holder}},
            )
        except Exception as exc:
            if is_conditional_failure(exc):
                return False
            raise
        return True

    def subscribers(self, build_id: str) -> list[str]:
        """Connection ids subscribed to the build (strongly consistent)."""
        kwargs: dict[str, Any] = {
            "TableName": self.table,
            "KeyConditionExpression": "pk = :b",
            "ExpressionAttributeValues": {":b": {"S": build_id}},
            "ProjectionExpression": "sk",
            "ConsistentRead": True,
        }
        return [item["sk"]["S"] for item in query_items(**kwargs)]

    def drop(self, connection_id: str, build_id: str) -> None:
        """A gone client's subscription (its other items go with `forget`)."""
        self.unsubscribe(connection_id, build_id)
