"""Cognito JWTs checked in code (the WebSocket `$connect` authorizer): signature against the user
pool's JWKS, expiry, issuer, and the app client (an ID token's `aud`, an access token's `client_id`).

`jwt` (pyjwt[crypto]) is imported on first use, so no other function pays for it at cold start.
"""

from __future__ import annotations

import threading
from typing import Any

from shared.errors import Unauthorized

_clients: dict[str, Any] = {}
_lock = threading.Lock()
ALGORITHMS = ["RS256"]


def _jwks(issuer: str) -> Any:
    with _lock:
        found = _clients.get(issuer)
        if found is None:
            from jwt import PyJWKClient

            # Keys are cached for the life of the container (refetched on an unknown `kid`).
            found = _clients[issuer] = PyJWKClient(f"{issuer}/.well-known/jwks.json", cache_keys=True, timeout=5)
        return found


def verify(token: str, *, issuer: str, client_id: str) -> dict[str, Any]:
    """The token's claims; Unauthorized for anything that is not a live token of this pool and client."""
    import jwt

    if not token or not issuer or not client_id:
        raise Unauthorized("missing token")
    try:
        key = _jwks(issuer).get_signing_key_from_jwt(token)
        claims: dict[str, Any] = jwt.decode(
            token,
            key.key,
            algorithms=ALGORITHMS,
            issuer=issuer,
            options={"require": ["exp", "iat", "iss", "sub", "token_use"], "verify_aud": False},
            leeway=5,
        )
    except (jwt.PyJWTError, ValueError) as exc:
        raise Unauthorized(f"invalid token: {type(exc).__name__}") from None
    use = claims.get("token_use")
    audience = claims.get("aud") if use == "id" else claims.get("client_id") if use == "access" else None
    if audience != client_id:
        raise Unauthorized("token is not for this app client")
    return claims


def reset() -> None:
    with _lock:
        _clients.clear()
