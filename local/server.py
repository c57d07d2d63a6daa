"""`stepwise serve`: the HTTP API on uvicorn, each request turned into the API Gateway proxy event
the `api` handler gets on AWS. The bearer token check plays the authorizer (STEPWISE_LOCAL_TOKENS)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qsl

from local.apigw import proxy_event
from local.context import LocalContext
from local.runtime import FUNCTION_TIMEOUTS, PREFIX, load_handler
from local.static import static_answer
from shared.settings import get_settings

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

PUBLIC_ROUTES = {("GET", "/openapi.json")}


def _unauthorized() -> tuple[int, dict[str, str], bytes]:
    body = json.dumps({"error": {"code": "unauthorized", "message": "missing or invalid bearer token"}})
    return 401, {"Content-Type": "application/json", "WWW-Authenticate": "Bearer"}, body.encode()


def handle_request(
    method: str, path: str, query: str, headers: dict[str, str], body: bytes
) -> tuple[int, dict[str, str], bytes]:
    """One request through the authorizer and the api handler (sync; run off the event loop)."""
    user: str | None = None
    if (method, path) not in PUBLIC_ROUTES:
        auth = headers.get("authorization", "")
        scheme, _, token = auth.partition(" ")
        user = get_settings().tokens.get(token.strip()) if scheme.lower() == "bearer" else None
        if not user:
            return _unauthorized()
    event = proxy_event(
        method,
        path,
        user=user,
        body=body.decode("utf-8", errors="replace") or None,
        query=dict(parse_qsl(query)) or None,
        headers={k.title(): v for k, v in headers.items()},
    )
    result = load_handler("api")(event, LocalContext(f"{PREFIX}-api", FUNCTION_TIMEOUTS["api"]))
    out_headers = {k: str(v) for k, v in (result.get("headers") or {}).items()}
    for k, values in (result.get("multiValueHeaders") or {}).items():
        out_headers[k] = ",".join(map(str, values))
    return int(result["statusCode"]), out_headers, (result.get("body") or "").encode()


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] == "websocket":
        from local.ws import websocket_app

        await websocket_app(scope, receive, send)
        return
    if scope["type"] != "http":
        return
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    headers = {k.decode().lower(): v.decode() for k, v in scope.get("headers", [])}
    answer = static_answer(scope["method"], scope["path"])  # the dashboard at /
    if answer is None:
        answer = await asyncio.to_thread(
            handle_request, scope["method"], scope["path"], scope.get("query_string", b"").decode(), headers, body
        )
    status, out_headers, payload = answer
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(k.lower().encode(), v.encode()) for k, v in out_headers.items()],
        }
    )
    await send({"type": "http.response.body", "body": payload})
