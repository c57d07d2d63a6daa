"""WebSocket `$connect` authorizer (REQUEST): the Cognito JWT in `?token=` opens the connection.

A bad token raises "Unauthorized", which API Gateway answers with 401 before any route runs. The
caller's `sub` reaches every route of the connection as `requestContext.authorizer.principalId`.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from shared.cognito import verify
from shared.errors import Unauthorized
from shared.observability import lambda_handler, logger
from shared.settings import get_settings


@lambda_handler
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    token = (event.get("queryStringParameters") or {}).get("token") or ""
    settings = get_settings()
    try:
        claims = verify(token, issuer=settings.cognito_issuer, client_id=settings.cognito_client_id)
    except Unauthorized as exc:
        logger.info("websocket connect refused", extra={"reason": exc.message})
        raise Exception("Unauthorized") from None  # the exact message API Gateway turns into 401
    sub = str(claims["sub"])
    return {
        "principalId": sub,
        "policyDocument": {
            "Version": "2012-10-17",
            "Statement": [{"Action": "execute-api:Invoke", "Effect": "Allow", "Resource": event["methodArn"]}],
        },
        "context": {"sub": sub},
    }
