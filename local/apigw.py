"""API Gateway REST proxy events, as the Cognito authorizer would pass them on."""

from __future__ import annotations

import time
import uuid
from typing import Any


def proxy_event(
    method: str,
    path: str,
    *,
    user: str | None,
    body: str | None = None,
    query: dict[str, str] | None = None,
    headers: dict[str, str] | None = None,
    source_ip: str = "127.0.0.1",
) -> dict[str, Any]:
    hdrs = {"Content-Type": "application/json", **(headers or {})}
    authorizer: dict[str, Any] = {"claims": {"sub": user}} if user else {}
    return {
        "resource": path,
        "path": path,
        "httpMethod": method.upper(),
        "headers": hdrs,
        "multiValueHeaders": {k: [v] for k, v in hdrs.items()},
        "queryStringParameters": query or None,
        "multiValueQueryStringParameters": {k: [v] for k, v in (query or {}).items()} or None,
        "pathParameters": None,
        "stageVariables": None,
        "requestContext": {
            "resourcePath": path,
            "httpMethod": method.upper(),
            "path": f"/prod{path}",
            "stage": "prod",
            "requestId": str(uuid.uuid4()),
            "requestTimeEpoch": int(time.time() * 1000),
            "identity": {"sourceIp": source_ip, "userAgent": hdrs.get("User-Agent", "")},
            "authorizer": authorizer,
            "accountId": "123456789012",
            "apiId": "local",
        },
        "body": body,
        "isBase64Encoded": False,
    }
