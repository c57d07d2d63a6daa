"""Where moto cannot play AWS faithfully under concurrency (or fast enough to share one process
with the whole pipeline), and the shims that make it.

moto's DynamoDB backend takes no lock, and its `transact_write_items` deep-copies every table it
touches and, when any condition fails, puts those copies back: writes that other threads made in
the meantime vanish, stream records of the cancelled writes remain, and each transaction costs
O(table size). DynamoDB guarantees none of that. The shim below serializes the backend's item
operations behind one lock and runs a transaction as AWS does: check every condition, then apply
all writes or none. Two more keep the local runtime's one GIL for real work: plain DynamoDB results
are written with `json.dumps` instead of moto's shape walker, and a stream write wakes the relay
that plays the EventBridge Pipe instead of it polling. They touch moto internals, so moto is pinned and
`tests/integration/test_moto_fixes.py` fails loudly if they move.
"""

from __future__ import annotations

import functools
import threading
from typing import Any

_lock = threading.RLock()
_sqs_lock = threading.RLock()
_installed = False
_LOCKED_METHODS = ("put_item", "get_item", "batch_get_item", "query", "scan", "update_item", "delete_item")
_SQS_LOCKED_METHODS = (
    "send_message",
    "send_message_batch",
    "delete_message",
    "delete_message_batch",
    "change_message_visibility",
    "change_message_visibility_batch",
    "purge_queue",
)


def install() -> None:
    global _installed
    if _installed:
        return
    from moto.dynamodb.models import DynamoDBBackend

    for name in _LOCKED_METHODS:
        original = getattr(DynamoDBBackend, name)
        setattr(DynamoDBBackend, name, _locked(original))
    DynamoDBBackend.transact_write_items = _transact_write_items  # type: ignore[method-assign]
    _install_sqs()
    _install_plain_dynamodb_results()
    _install_stream_signal()
    _install_single_pass_projection()
    _install_query_size_memo()
    _install_stop_just_started()
    _installed = True


def _install_stop_just_started() -> None:
    """moto builds an execution's interpreter on its own thread after `start_execution` returns; a
    `stop_execution` in that window fails inside moto (AWS stops it). Wait for the interpreter."""
    import time

    from moto.stepfunctions.parser.backend.execution_worker import ExecutionWorker

    original = ExecutionWorker.stop

    def stop(self: Any, stop_date: Any, error: Any, cause: Any) -> None:
        deadline = time.monotonic() + 5.0
        while getattr(self, "env", None) is None and time.monotonic() < deadline:
            time.sleep(0.005)
        original(self, stop_date, error, cause)

    ExecutionWorker.stop = stop  # type: ignore[method-assign]


stream_written = threading.Event()  # set whenever a DynamoDB stream gets a record


_moto_project: Any = None  # moto's own Item.project, for the equivalence test


def _install_single_pass_projection() -> None:
    """moto turns the whole item into plain JSON (deep copies at every level) once per path of a
    ProjectionExpression, so naming 20 attributes costs several times reading the whole item; on
    DynamoDB a projection makes an answer smaller. Pick the paths from the item's attributes instead
    (paths with a list index still go the original way)."""
    from moto.dynamodb.models.dynamo_type import DynamoType, Item, LimitedSizeDict

    original = Item.project
    global _moto_project
    _moto_project = original

    def pick(attrs: dict[str, Any], path: list[str], out: dict[str, Any]) -> None:
        value = attrs.get(path[0])
        if value is None or out.get(path[0]) is value:  # absent, or already taken whole
            return
        if len(path) == 1:
            out[path[0]] = value
        elif value.is_map():
            inner = out.get(path[0]) or DynamoType({"M": {}})
            pick(value.value, path[1:], inner.value)
            if inner.value:  # a path that names nothing adds no empty map
                out[path[0]] = inner

    def project(self: Any, projection_expressions: list[list[str]]) -> Any:
        if any("[" in part for expr in projection_expressions for part in expr):
            return original(self, projection_expressions)
        out: dict[str, Any] = {}
        for expr in projection_expressions:
            pick(self.attrs, expr, out)
        # Item() re-measures the whole item on every attribute it sets (a part of a stored item is
        # never over the item limit); its attributes are the stored ones, read under the lock.
        item: Any = Item.__new__(Item)
        item.hash_key, item.range_key, item.attrs = self.hash_key, self.range_key, LimitedSizeDict(out)
        return item

    Item.project = project  # type: ignore[method-assign]


def _install_query_size_memo() -> None:
    """moto's Query measures every item twice (the 1 MB page check, then the page's running total),
    each time walking the whole item. Within one Query (under the table lock, items unchanged)
    measure each once."""
    import threading

    from moto.dynamodb.models.dynamo_type import Item
    from moto.dynamodb.models.table import Table

    original_size, original_query = Item.size, Table.query
    local = threading.local()

    def size(self: Any) -> int:
        sizes = getattr(local, "sizes", None)
        if sizes is None:
            return int(original_size(self))
        found = sizes.get(id(self))
        if found is None:
            found = sizes[id(self)] = original_size(self)
        return int(found)

    def query(self: Any, *args: Any, **kwargs: Any) -> Any:
        local.sizes = {}
        try:
            return original_query(self, *args, **kwargs)
        finally:
            local.sizes = None

    Item.size = size  # type: ignore[method-assign]
    Table.query = query  # type: ignore[method-assign]


def _install_stream_signal() -> None:
    """Let the local stream relay sleep until a stream has something, instead of polling it: on
    AWS the Pipe's pollers are not this process's CPU; here they would share its one GIL."""
    from moto.dynamodb.models.table import StreamShard

    original = StreamShard.add

    def add(self: Any, old: Any, new: Any) -> None:
        original(self, old, new)
        stream_written.set()

    StreamShard.add = add  # type: ignore[method-assign]


def _install_plain_dynamodb_results() -> None:
    """moto serializes every DynamoDB response by walking the operation's output shape, attribute
    by attribute: ~70% of a GetItem's CPU, which on one GIL is the local runtime's main cost. Its
    DynamoDB results are already plain JSON in the wire format (`dynamo_to_dict`), so when one holds
    nothing else (no bytes, no None, no float) it is written with `json.dumps`; anything else takes
    moto's serializer. `tests/integration/test_moto_fixes.py` checks both give the same response."""
    import json

    from moto.dynamodb.responses import DynamoResult

    original = DynamoResult.execute_result

    def execute_result(self: Any, context: Any) -> Any:
        if context.serializer_class.__name__ != "JSONSerializer" or not _plain(self.result):
            return original(self, context)
        return 200, {"Content-Type": "application/x-amz-json-1.0"}, json.dumps(self.result)

    DynamoResult.execute_result = execute_result  # type: ignore[method-assign]
    # A result holds the backend's live items until it is turned into plain dicts here: do that under
    # the backend's lock, or a concurrent write changes an item while it is read ("dictionary changed
    # size during iteration").
    DynamoResult.__init__ = _locked(DynamoResult.__init__)  # type: ignore[method-assign]
    DynamoResult._moto_execute_result = original  # type: ignore[attr-defined]  # for the equivalence test


def _plain(value: Any) -> bool:
    """Only dicts with str keys, lists, str, int and bool: JSON that any serializer writes alike."""
    if isinstance(value, (str, int)):  # bool is an int; float is not
        return True
    if isinstance(value, dict):
        return all(isinstance(k, str) and _plain(v) for k, v in value.items())
    if isinstance(value, list):
        return all(_plain(v) for v in value)
    return False


def _install_sqs() -> None:
    """moto's SQS walks and mutates a queue's message list from every caller's thread without a
    lock ("Set changed size during iteration"): a message can be marked in flight with no receiver
    holding it, so it reappears only after its visibility timeout. One lock around the operations;
    a long poll waits outside it, in short slices, so it never blocks senders."""
    import time

    from moto.sqs.models import SQSBackend

    for name in _SQS_LOCKED_METHODS:
        setattr(SQSBackend, name, _locked(getattr(SQSBackend, name), _sqs_lock))
    original = SQSBackend.receive_message

    def receive_message(
        self: Any,
        queue_name: str,
        count: int,
        wait_seconds_timeout: int,
        visibility_timeout: int,
        message_attribute_names: list[str] | None = None,
    ) -> Any:
        deadline = time.monotonic() + (wait_seconds_timeout or 0)
        while True:
            with _sqs_lock:
                got = original(self, queue_name, count, 0, visibility_timeout, message_attribute_names)
            left = deadline - time.monotonic()
            if got or left <= 0:
                return got
            queue = self.get_queue(queue_name)
            if queue.messages:  # visible but not deliverable now (a FIFO group in flight): nap
                time.sleep(min(left, 0.003))
            else:  # nothing visible: block until a send wakes the queue
                queue.wait_for_messages(min(left, 0.5))

    SQSBackend.receive_message = receive_message  # type: ignore[method-assign]


def _locked(fn: Any, lock: Any = _lock) -> Any:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with lock:
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
            old = None  # what a failed condition found, when ALL_OLD asks for it (as AWS returns it)
            try:
                condition = op.get("ConditionExpression")
                if condition is not None:
                    current = self.get_item(op["TableName"], key)
                    parsed = get_filter_expression(
                        condition, op.get("ExpressionAttributeNames"), op.get("ExpressionAttributeValues")
                    )
                    if not parsed.expr(current):
                        if current and op.get("ReturnValuesOnConditionCheckFailure") == "ALL_OLD":
                            old = current.to_json()["Attributes"]
                        raise ConditionalCheckFailed()
                errors.append((None, None, None))
            except ConditionalCheckFailed as exc:
                errors.append(("ConditionalCheckFailed", str(exc.message), old))
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
