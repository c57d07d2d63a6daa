"""Who a bearer token belongs to on `stepwise serve`, which plays API Gateway's authorizer: a dev
token of STEPWISE_LOCAL_TOKENS, or, when the COGNITO_* settings name a user pool, an ID or
access token of that pool and app client (signature against the pool's JWKS, expiry, issuer), whose
`sub` is the caller, as the Cognito authorizer passes it on AWS."""

from __future__ import annotations

from shared import cognito
from shared.errors import Unauthorized
from shared.settings import get_settings


def user_for(token: str) -> str | None:
    settings = get_settings()
    token = token.strip()
    if not token:
        return None
    user = settings.tokens.get(token)
    if user or not settings.cognito or token.count(".") != 2:
        return user
    try:
        claims = cognito.verify(token, issuer=settings.cognito_issuer, client_id=settings.cognito_client_id)
    except Unauthorized:
        return None
    return str(claims["sub"])
