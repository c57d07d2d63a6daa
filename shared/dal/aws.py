"""boto3 clients, created lazily once per process (cold starts import only what they use)."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

_clients: dict[str, Any] = {}
_lock = threading.Lock()
_hooks: list[Callable[[Any], None]] = []  # called with each client made (the local runtime's hooks)


def add_client_hook(hook: Callable[[Any], None]) -> None:
    """Call `hook(client)` on every client, those made already and those to come (once each)."""
    with _lock:
        if hook in _hooks:
            return
        _hooks.append(hook)
        made = list(_clients.values())
    for found in made:
        hook(found)


def client(service: str) -> Any:
    found = _clients.get(service)
    if found is not None:
        return found
    with _lock:
        found = _clients.get(service)
        if found is None:
            import boto3
            from botocore.config import Config

            found = boto3.session.Session().client(
                service,
                config=Config(retries={"mode": "standard", "max_attempts": 5}, max_pool_connections=64),
            )
            for hook in _hooks:
                hook(found)
            _clients[service] = found
        return found


def query_items(**kwargs: Any) -> Iterator[dict[str, Any]]:
    """Every item a DynamoDB Query matches (DynamoDB JSON), page after page: boto3's paginator."""
    for page in client("dynamodb").get_paginator("query").paginate(**kwargs):
        yield from page.get("Items") or []


def reset_clients() -> None:
    """Forget every client (the local runtime and tests switch endpoints or mocks)."""
    with _lock:
        _clients.clear()


# --- DynamoDB attribute values -------------------------------------------------------------------
def _serializer() -> Any:
    from boto3.dynamodb.types import TypeSerializer

    return TypeSerializer()


def _deserializer() -> Any:
    from boto3.dynamodb.types import TypeDeserializer

    return TypeDeserializer()


def to_ddb(value: Any) -> dict[str, Any]:
    """A Python value as a DynamoDB attribute value (floats become Decimals)."""
    plain = json.loads(json.dumps(value), parse_float=Decimal)
    return _serializer().serialize(plain)  # type: ignore[no-any-return]


def to_item(values: dict[str, Any]) -> dict[str, Any]:
    return {k: to_ddb(v) for k, v in values.items() if v is not None}


def _plain(value: Any) -> Any:
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, set):
        return {_plain(v) for v in value}
    return value


def from_item(item: dict[str, Any]) -> dict[str, Any]:
    d = _deserializer()
    return {k: _plain(d.deserialize(v)) for k, v in item.items()}
