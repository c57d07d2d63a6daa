"""Where moto cannot play AWS faithfully under concurrency, and the shim that makes it.

moto's DynamoDB backend takes no lock, and its `transact_write_items` deep-copies every table it
touches and, when any condition fails, puts those copies back: writes that other threads made in
the meantime vanish, stream records of the cancelled writes remain, and each transaction costs
O(table size). DynamoDB guarantees none of that. The shim below serializes the backend's item
operations behind one lock and runs a transaction as AWS does: check every condition, then apply
all writes or none. It touches moto internals, so moto is pinned and
`tests/integration/test_moto_fixes.py` fails loudly if they move.
"""

from __future__ import annotations

import functools
import threading
from typing import Any

_lock = threading.RLock()
_installed = False
_LOCKED_METHODS = ("put_item", "get_item", "query", "scan", "update_item", "delete_item")


def install() -> None:
    global _installed
    if _installed:
        return
    from moto.dynamodb.models import DynamoDBBackend

    for name in _LOCKED_METHODS:
        original = getattr(DynamoDBBackend, name)
        setattr(DynamoDBBackend, name, _locked(original))
    DynamoDBBackend.transact_write_items = _transact_write_items  # type: ignore[method-assign]
    _installed = True


def _locked(fn: Any) -> Any:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with _lock:
            return fn(*args, **kwargs)

    return wrapper


def _transact_write_items(self: Any, transact_items: list[dict[str, Any]]) -> None:
    from moto.dynamodb.comparisons import get_filter_expression
    from moto.dynamodb.exceptions import (
        ConditionalCheckFailed,
        MultipleTransactionsException,
        TooManyTransactionsException,
        TransactionCanceledException,
        TransactWriteSingleOpException,
    )

    if len(transact_items) > 100:
        raise TooManyTransactionsException()
    with _lock:
        seen: set[tuple[str, str]] = set()
        planned: list[tuple[str, dict[str, Any], dict[str, Any]]] = []
        errors: list[tuple[Any, Any, Any]] = []
        for item in transact_items:
            if len(item) > 1:
                raise TransactWriteSingleOpException
            op_type, op = next(iter(item.items()))
            table = self.get_table(op["TableName"])
            if op_type == "Put":
                attrs = op["Item"]
                key = {table.hash_key_attr: attrs[table.hash_key_attr]}
                if table.range_key_attr is not None:
                    key[table.range_key_attr] = attrs[table.range_key_attr]
            else:
                key = op["Key"]
            marker = (op["TableName"], str(sorted(key.items())))
            if marker in seen:
                raise MultipleTransactionsException()
            seen.add(marker)
            try:
                condition = op.get("ConditionExpression")
                if condition is not None:
                    current = self.get_item(op["TableName"], key)
                    parsed = get_filter_expression(
                        condition, op.get("ExpressionAttributeNames"), op.get("ExpressionAttributeValues")
                    )
                    if not parsed.expr(current):
                        raise ConditionalCheckFailed()
                errors.append((None, None, None))
            except ConditionalCheckFailed as exc:
                errors.append(("ConditionalCheckFailed", str(exc.message), None))
            planned.append((op_type, op, key))
        if any(code is not None for code, _, _ in errors):
            raise TransactionCanceledException(errors)
        for op_type, op, key in planned:  # every condition holds: apply all
            names, values = op.get("ExpressionAttributeNames"), op.get("ExpressionAttributeValues")
            if op_type == "Put":
                self.put_item(
                    op["TableName"], op["Item"], expression_attribute_names=names, expression_attribute_values=values
                )
            elif op_type == "Delete":
                self.delete_item(
                    op["TableName"], key, expression_attribute_names=names, expression_attribute_values=values
                )
            elif op_type == "Update":
                self.update_item(
                    op["TableName"],
                    key,
                    update_expression=op["UpdateExpression"],
                    expression_attribute_names=names,
                    expression_attribute_values=values,
                )
