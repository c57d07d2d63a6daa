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
import re
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
    _install_plain_stream_records()
    _install_parsed_update_expressions()
    _install_item_size_check_once()
    _install_stream_signal()
    _install_single_pass_projection()
    _install_query_size_memo()
    _install_stop_just_started()
    _install_parsed_conditions()
    _install_plain_dynamodb_requests()
    _install_method_names_memo()
    _install_backend_urls_memo()
    _install_random_strings_at_once()
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


def _install_item_size_check_once() -> None:
    """moto builds an item attribute by attribute into a dict that re-sums the size of everything
    already in it on every insert (quadratic in the attributes, each map walked each time): a
    tenth of a build's CPU for its event items. Build it at once and check the same limit once:
    sizes only add up, so the sum passes the limit at some insert exactly when it does at the end."""
    from moto.dynamodb.exceptions import ItemSizeTooLarge
    from moto.dynamodb.models.dynamo_type import DynamoType, Item, LimitedSizeDict
    from moto.dynamodb.models.utilities import bytesize

    def __init__(self: Any, hash_key: Any, range_key: Any, attrs: dict[str, Any]) -> None:
        self.hash_key = hash_key
        self.range_key = range_key
        built = {key: DynamoType(value) for key, value in attrs.items()}
        if sum(bytesize(key) + value.size() for key, value in built.items()) > 405000:  # moto's limit
            raise ItemSizeTooLarge
        self.attrs = LimitedSizeDict.__new__(LimitedSizeDict)
        dict.__init__(self.attrs, built)

    Item.__init__ = __init__  # type: ignore[method-assign]


def _install_plain_dynamodb_requests() -> None:
    """moto reads every DynamoDB request body by walking the operation's input shape, member by
    member (a tenth of the local runtime's CPU: a plan's tasks, the events' data). The body is JSON
    in the wire format already; walking the shape changes only binary attribute values (`B`, `BS`:
    base64 text to bytes). A body without them is read with `json.loads`; anything else takes moto's
    parser. `test_moto_fixes` checks both give the same parameters."""
    import json

    from moto.dynamodb.responses import DynamoHandler

    original = DynamoHandler.parse_parameters

    def parse_parameters(self: Any, request: Any) -> None:
        body = request.data
        if body and b'"B"' not in body and b'"BS"' not in body:
            try:
                params = json.loads(body)
            except ValueError:
                params = None
            if isinstance(params, dict):
                self.params = params
                return
        original(self, request)

    DynamoHandler.parse_parameters = parse_parameters  # type: ignore[method-assign]
    DynamoHandler._moto_parse_parameters = original  # type: ignore[attr-defined]  # for the equivalence test


def _install_method_names_memo() -> None:
    """moto lists a response class's methods (`inspect.getmembers`, every attribute of the class)
    on every request, to check the action is one of them; a class's methods are the same each time."""
    from moto.core import responses, utils

    original = utils.method_names_from_class
    found: dict[Any, list[str]] = {}

    def method_names_from_class(clazz: Any) -> list[str]:
        names = found.get(clazz)
        if names is None:
            names = found[clazz] = original(clazz)
        return names

    responses.method_names_from_class = method_names_from_class  # type: ignore[assignment]


def _install_backend_urls_memo() -> None:
    """moto rebuilds a service's URL table (every path pattern formatted with every base URL and
    DNS suffix) for every request it routes; the table depends only on the service's url module."""
    from moto.core.base_backend import BaseBackend

    original = BaseBackend.urls
    built: dict[Any, Any] = {}

    def urls(self: Any) -> Any:
        key = (type(self), tuple(self.url_bases))
        found = built.get(key)
        if found is None:
            found = built[key] = original.fget(self)  # type: ignore[attr-defined]
        return found

    BaseBackend.urls = property(urls)  # type: ignore[assignment, method-assign]


def _install_random_strings_at_once() -> None:
    """moto draws every response's 52-character request id one `random.choice` per character (a
    fourteenth of its CPU serving Stepwise's small requests); `choices` draws them in one call, from
    the same characters, with the same generator (so a seeded moto stays repeatable)."""
    import string

    from moto.moto_api._internal.moto_random import MotoRandom

    def get_random_string(self: Any, length: int = 20, include_digits: bool = True, lower_case: bool = False) -> str:
        pool = string.ascii_letters + (string.digits if include_digits else "")
        drawn = "".join(self.choices(pool, k=length))
        return drawn.lower() if lower_case else drawn

    MotoRandom.get_random_string = get_random_string  # type: ignore[method-assign]


_CONDITIONS_KEPT = 4096


def _install_parsed_conditions() -> None:
    """moto lexes and parses a condition expression character by character on every conditional
    write (a fifth of moto's CPU in a build: each event's `attribute_not_exists(seq)`, each state
    change's `#status = :s`). Keep the parsed condition per (expression, names, values): the same
    three parse to the same tree, and moto only reads the tree to evaluate it. A parse that fails is
    not kept (it fails again, with moto's message)."""
    import json
    from collections import OrderedDict

    from moto.dynamodb.comparisons import ConditionExpressionParser

    original = ConditionExpressionParser.parse
    kept: OrderedDict[tuple[Any, ...], tuple[Any, list[str], list[str]]] = OrderedDict()
    lock = threading.Lock()

    def parse(self: Any) -> Any:
        names, values = self.expression_attribute_names, self.expression_attribute_values
        key = (
            self.condition_expression,
            tuple(sorted(names.items())) if names else (),
            json.dumps(values, sort_keys=True, default=repr) if values else "",
        )
        with lock:
            found = kept.get(key)
            if found is not None:
                kept.move_to_end(key)
        if found is None:
            op = original(self)
            found = (op, list(self.expr_attr_names_found), list(self.expr_attr_values_found))
            with lock:
                kept[key] = found
                while len(kept) > _CONDITIONS_KEPT:
                    kept.popitem(last=False)
            return op
        self.expr_attr_names_found.extend(found[1])  # what moto checks for unused names and values
        self.expr_attr_values_found.extend(found[2])
        return found[0]

    ConditionExpressionParser.parse = parse  # type: ignore[method-assign]
    ConditionExpressionParser._moto_parse = original  # type: ignore[attr-defined]  # for the equivalence test


def _install_parsed_update_expressions() -> None:
    """moto parses an update expression twice per update (to validate the request, then to apply
    it), and Stepwise writes the same few expressions over and over: keep the parsed trees. moto
    never changes a parsed tree: it validates and applies a deep copy."""
    from moto.dynamodb.parsing import expressions

    parser: Any = expressions.UpdateExpressionParser  # type: ignore[attr-defined]
    make = parser.make.__func__
    cached: Any = functools.lru_cache(maxsize=1024)(lambda cls, expression: make(cls, expression))
    parser.make = classmethod(cached)


def _install_plain_stream_records() -> None:
    """The stream relay (the local EventBridge Pipe) reads every event back through GetRecords; moto
    writes that response with its shape walker too (a tenth of a build's CPU). A record is the
    stored dict: DynamoDB JSON images, strings and ints, and one datetime, which the JSON protocol
    writes as epoch seconds (`test_moto_fixes` checks both give the same response)."""
    import calendar
    import datetime
    import json

    from moto.core.responses import ActionResult
    from moto.dynamodbstreams.responses import DynamoDBStreamsHandler

    def epoch(value: Any) -> Any:
        if isinstance(value, datetime.datetime):  # as moto's JSON serializer writes a timestamp
            seconds = calendar.timegm(value.timetuple())
            return seconds + (value.microsecond // 1000) / 1000.0 if value.microsecond else seconds
        raise TypeError(f"not JSON: {type(value).__name__}")

    class PlainRecords(ActionResult):
        def execute_result(self, context: Any) -> Any:
            if context.serializer_class.__name__ != "JSONSerializer":
                return super().execute_result(context)
            try:
                body = json.dumps(self.result, default=epoch)
            except TypeError:  # something else than the records above (binary attributes): moto's way
                return super().execute_result(context)
            return 200, {"Content-Type": "application/x-amz-json-1.0"}, body

    original = DynamoDBStreamsHandler.get_records

    def get_records(self: Any) -> Any:
        return PlainRecords(original(self).result)

    DynamoDBStreamsHandler.get_records = get_records  # type: ignore[method-assign]
    DynamoDBStreamsHandler._moto_get_records = original  # type: ignore[attr-defined]  # for the equivalence test


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

    from moto.core.utils import unix_time

    def is_message_valid_based_on_retention_period(self: Any, queue_name: str, message: Any) -> bool:
        """moto's asks the queue for all its attributes (counting every message it holds, twice) for
        each message it receives: receiving from a backlog of N was N². The retention period alone."""
        retention = int(self.get_queue(queue_name).message_retention_period)
        return bool(retention + message.sent_timestamp / 1000 > unix_time())

    SQSBackend.is_message_valid_based_on_retention_period = (  # type: ignore[method-assign]
        is_message_valid_based_on_retention_period
    )

    # The same per message sent: moto reads one setting through every attribute of the queue.
    from moto.sqs.models import Queue

    sending = threading.local()
    all_attributes = Queue.attributes

    def attributes(self: Any) -> dict[str, Any]:
        if getattr(sending, "on", False) and self.fifo_queue:  # all send_message reads of them
            return {"ContentBasedDeduplication": str(bool(self.content_based_deduplication)).lower()}
        if getattr(sending, "on", False):
            return {}
        return all_attributes.fget(self)  # type: ignore[attr-defined, no-any-return]

    original_send = SQSBackend.send_message

    def send_message(self: Any, *args: Any, **kwargs: Any) -> Any:
        sending.on = True
        try:
            return original_send(self, *args, **kwargs)
        finally:
            sending.on = False

    Queue.attributes = property(attributes)  # type: ignore[assignment, method-assign]
    SQSBackend.send_message = send_message  # type: ignore[method-assign]


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
            elif op_type == "Update" and _plain_update(self, op, key):
                pass
            elif op_type == "Update":
                self.update_item(
                    op["TableName"],
                    key,
                    update_expression=op["UpdateExpression"],
                    expression_attribute_names=names,
                    expression_attribute_values=values,
                )


_SET = re.compile(r"(#\w+) = (:\w+)")
_UPDATE = re.compile(
    r"(?:SET (?P<set>#\w+ = :\w+(?:, #\w+ = :\w+)*))?"
    r" ?(?:REMOVE (?P<remove>#\w+(?:, #\w+)*))?"
    r" ?(?:ADD (?P<add>#\w+ :\w+(?:, #\w+ :\w+)*))?"
)
_PLACEHOLDER = re.compile(r"[#:]\w+")


def _plain_update(backend: Any, op: dict[str, Any], key: dict[str, Any]) -> bool:
    """Apply a transaction's Update whose conditions already held, when it is of the plain form
    Stepwise writes (`SET #a = :v, ... REMOVE #b, ... ADD #n :n, ...` on top-level attributes of an
    existing item in a table without a stream). moto's `update_item` parses, validates and
    deep-copies the expression tree and the item each time, which for the build's dispatch state
    was a fifth of a build's CPU. Anything else (a path, a function, a new item, a stream, a type
    the ADD does not take as written here) returns False: moto's own update then runs.
    `test_moto_fixes` applies both to the same items and compares."""
    from moto.dynamodb.exceptions import ItemSizeToUpdateTooLarge
    from moto.dynamodb.models.dynamo_type import DynamoType, LimitedSizeDict
    from moto.dynamodb.models.utilities import bytesize

    expression = op.get("UpdateExpression") or ""
    match = _UPDATE.fullmatch(expression)
    names: dict[str, str] = op.get("ExpressionAttributeNames") or {}
    values: dict[str, Any] = op.get("ExpressionAttributeValues") or {}
    if not expression or match is None:
        return False
    used = set(_PLACEHOLDER.findall(expression + " " + (op.get("ConditionExpression") or "")))
    if used != set(names) | set(values):  # an unused or missing placeholder: moto says which
        return False
    table = backend.get_table(op["TableName"])
    if table.stream_shard is not None:
        return False
    hash_value, range_value = backend.get_keys_value(table, key)
    item = table.get_item(hash_value, range_value)
    if item is None:
        return False
    keys = {table.hash_key_attr, table.range_key_attr}
    attrs = dict(item.attrs)
    touched: set[str] = set()

    def attr(placeholder: str) -> str | None:
        name = names.get(placeholder)
        if name is None or name in keys or name in touched:
            return None
        touched.add(name)
        return name

    for target, value in _SET.findall(match["set"] or ""):
        name = attr(target)
        if name is None or value not in values:
            return False
        attrs[name] = DynamoType(values[value])
    for target in (match["remove"] or "").split(", ") if match["remove"] else []:
        name = attr(target)
        if name is None:
            return False
        attrs.pop(name, None)
    for pair in (match["add"] or "").split(", ") if match["add"] else []:
        target, value = pair.split(" ")
        name = attr(target)
        if name is None or value not in values or "N" not in values[value]:
            return False
        addend = DynamoType(values[value])
        current = attrs.get(name)
        if current is None:
            attrs[name] = addend
        elif current.type == "N":
            attrs[name] = current + addend
        else:
            return False
    if sum(bytesize(k) + v.size() for k, v in attrs.items()) > 405000:  # moto's item limit
        raise ItemSizeToUpdateTooLarge()
    fresh = LimitedSizeDict.__new__(LimitedSizeDict)
    dict.__init__(fresh, attrs)
    item.attrs = fresh
    return True
