"""Live events over WebSocket: the frames a client sends and the frames it gets (docs/websocket.md).

Client → server: `subscribe {buildId, after}`, `unsubscribe {buildId}`, `ping`. Server → client:
`subscribed {buildId, lastSeq}`, the event envelopes, `pong`, and `error {code, ...}`.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, TypeAdapter, ValidationError

from shared.errors import InvalidInput

MAX_FRAME_BYTES = 128 * 1024  # API Gateway's WebSocket message limit, enforced by both runtimes
MAX_CLIENT_FRAME_BYTES = 32 * 1024  # what a client may send: API Gateway's frame size
MAX_SUBSCRIPTIONS = 100  # builds one connection may watch at once
SEQ_MAX = 2**53 - 1  # a seq a browser's Number holds exactly


class Subscribe(BaseModel):
    action: Literal["subscribe"]
    buildId: str = Field(min_length=1, max_length=128)
    after: int = Field(0, ge=0, le=SEQ_MAX)


class Unsubscribe(BaseModel):
    action: Literal["unsubscribe"]
    buildId: str = Field(min_length=1, max_length=128)


class Ping(BaseModel):
    action: Literal["ping"]


ClientMessage = Annotated[Subscribe | Unsubscribe | Ping, Field(discriminator="action")]
_client_message: TypeAdapter[Subscribe | Unsubscribe | Ping] = TypeAdapter(ClientMessage)


def parse_client_message(text: str | bytes) -> Subscribe | Unsubscribe | Ping:
    """One client frame, validated; InvalidInput names the field that is wrong."""
    if len(text) > MAX_CLIENT_FRAME_BYTES:
        raise InvalidInput(f"frame larger than {MAX_CLIENT_FRAME_BYTES} bytes", details=[{"field": "frame"}])
    try:
        raw = json.loads(text)
    except ValueError:
        raise InvalidInput("frame is not valid JSON", details=[{"field": "frame"}]) from None
    if not isinstance(raw, dict):
        raise InvalidInput("frame must be a JSON object", details=[{"field": "frame"}])
    try:
        return _client_message.validate_python(raw)
    except ValidationError as exc:
        details = [
            {"field": ".".join(str(p) for p in e["loc"][1:] or e["loc"]) or "action", "message": e["msg"]}
            for e in exc.errors()
        ]
        if any(e["type"] in ("union_tag_invalid", "union_tag_not_found") for e in exc.errors()):
            details = [{"field": "action", "message": "expected subscribe, unsubscribe or ping"}]
        fields = ", ".join(sorted({d["field"] for d in details}))
        raise InvalidInput(f"Invalid field(s): {fields}", details=details) from None


# --- server frames -------------------------------------------------------------------------------
def subscribed(build_id: str, last_seq: int) -> dict[str, Any]:
    return {"type": "subscribed", "buildId": build_id, "lastSeq": last_seq}


def unsubscribed(build_id: str) -> dict[str, Any]:
    return {"type": "unsubscribed", "buildId": build_id}


def pong() -> dict[str, Any]:
    return {"type": "pong"}


def not_found(build_id: str) -> dict[str, Any]:
    """Another user's build and a missing one answer exactly alike."""
    return {"type": "error", "code": "not_found", "buildId": build_id}


def invalid_request(exc: InvalidInput) -> dict[str, Any]:
    frame: dict[str, Any] = {"type": "error", "code": "invalid_request", "message": exc.message}
    if exc.details is not None:
        frame["details"] = exc.details
    return frame


def too_many_subscriptions(build_id: str) -> dict[str, Any]:
    return {
        "type": "error",
        "code": "too_many_subscriptions",
        "buildId": build_id,
        "message": f"one connection watches at most {MAX_SUBSCRIPTIONS} builds; unsubscribe from one first",
    }


def subscription_stopped(build_id: str) -> dict[str, Any]:
    """The subscription stopped on the server's side (a failure, or a replay longer than one
    function may run); subscribing again with `after` resumes it."""
    return {
        "type": "error",
        "code": "subscription_stopped",
        "buildId": build_id,
        "message": "the subscription stopped; subscribe again with after = the highest seq you have",
    }


def too_large(build_id: str, seq: int) -> dict[str, Any]:
    """An event whose frame would exceed the message limit: the client reads it from the log."""
    return {
        "type": "error",
        "code": "too_large",
        "buildId": build_id,
        "seq": seq,
        "message": f"event {seq} exceeds {MAX_FRAME_BYTES} bytes; read it from GET /builds/{build_id}/events",
    }
