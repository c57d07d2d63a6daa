"""`stepwise serve`: the HTTP API on uvicorn, each request turned into the API Gateway proxy event
the `api` handler gets on AWS. The bearer token check plays the authorizer (local/auth.py: the
STEPWISE_LOCAL_TOKENS, and a user pool's JWTs when COGNITO_* are set); like API Gateway, preflights (`OPTIONS`) and the public documents need no token, and the answers
made here (401) carry the CORS headers of an allowed origin (STEPWISE_CORS_ORIGINS)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import parse_qsl

from local.apigw import proxy_event
from local.auth import user_for
from local.runtime import call_api
from local.static import static_answer
from shared import cors
from shared.settings import get_settings

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

PUBLIC_ROUTES = {("GET", "/openapi.json"), ("GET", "/docs")}
# Requests run on threads (each one is a Lambda invocation); a long-poll holds one for up to 20 s,
# so there are enough for many watchers besides the other calls.
_REQUESTS = ThreadPoolExecutor(max_workers=64, thread_name_prefix="api")


def _unauthorized(origin: str | None) -> tuple[int, dict[str, str], bytes]:
    body = json.dumps({"error": {"code": "unauthorized", "message": "missing or invalid bearer token"}})
    headers = {"Content-Type": "application/json", "WWW-Authenticate": "Bearer"}
    return 401, {**headers, **cors.headers_for(origin, get_settings().cors_origins)}, body.encode()


def handle_request(
    method: str, path: str, query: str, headers: dict[str, str], body: bytes
) -> tuple[int, dict[str, str], bytes]:
    """One request through the authorizer and the api handler (sync; run off the event loop)."""
    user: str | None = None
    if (method, path) not in PUBLIC_ROUTES and method != "OPTIONS":
        auth = headers.get("authorization", "")
        scheme, _, token = auth.partition(" ")
        user = user_for(token) if scheme.lower() == "bearer" else None
        if not user:
            return _unauthorized(headers.get("origin"))
    event = proxy_event(
        method,
        path,
        user=user,
        body=body.decode("utf-8", errors="replace") or None,
        query=dict(parse_qsl(query, keep_blank_values=True)) or None,
        headers={k.title(): v for k, v in headers.items()},
    )
    result = call_api(event)
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
    headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
    answer = static_answer(scope["method"], scope["path"])  # the dashboard at /
    if answer is None:
        loop = asyncio.get_running_loop()
        answer = await loop.run_in_executor(
            _REQUESTS,
            handle_request,
            scope["method"],
            scope["path"],
            scope.get("query_string", b"").decode(errors="replace"),
            headers,
            body,
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
