"""The WebSocket `$connect` authorizer against a real JWKS endpoint (a local HTTP server speaking the
Cognito `/.well-known/jwks.json` format) with RS256 tokens signed here."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

jwt = pytest.importorskip("jwt")
from cryptography.hazmat.primitives.asymmetric import rsa  # noqa: E402
from pytest_httpserver import HTTPServer  # noqa: E402

CLIENT_ID = "frontend-client"
METHOD_ARN = "arn:aws:execute-api:us-east-1:123456789012:abc123/v1/$connect"


def _key() -> Any:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def keys() -> dict[str, Any]:
    return {"good": _key(), "other": _key()}


@pytest.fixture
def issuer(httpserver: HTTPServer, keys: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    from jwt.algorithms import RSAAlgorithm

    from shared import cognito
    from shared.settings import reset_settings

    jwk = json.loads(RSAAlgorithm.to_jwk(keys["good"].public_key()))
    jwk.update({"kid": "k1", "alg": "RS256", "use": "sig"})
    httpserver.expect_request("/pool/.well-known/jwks.json").respond_with_json({"keys": [jwk]})
    url = httpserver.url_for("/pool")
    monkeypatch.setenv("COGNITO_ISSUER", url)
    monkeypatch.setenv("COGNITO_CLIENT_ID", CLIENT_ID)
    monkeypatch.setenv("POWERTOOLS_TRACE_DISABLED", "true")
    reset_settings()
    cognito.reset()
    yield url
    cognito.reset()
    reset_settings()


def _token(issuer: str, key: Any, *, kid: str = "k1", **claims: Any) -> str:
    now = int(time.time())
    body = {"sub": "user-1", "iss": issuer, "iat": now, "exp": now + 600, "token_use": "id", "aud": CLIENT_ID}
    body.update(claims)
    return str(
        jwt.encode({k: v for k, v in body.items() if v is not None}, key, algorithm="RS256", headers={"kid": kid})
    )


def _authorize(token: str | None) -> dict[str, Any]:
    from functions.ws_authorizer.handler import handler
    from tests.integration.quiet import lambda_context

    event = {"type": "REQUEST", "methodArn": METHOD_ARN, "queryStringParameters": {"token": token} if token else {}}
    return handler(event, lambda_context("ws_authorizer", 10))


def test_a_valid_id_or_access_token_opens_the_connection_as_its_sub(issuer: str, keys: dict[str, Any]) -> None:
    allowed = _authorize(_token(issuer, keys["good"]))
    assert allowed["principalId"] == "user-1" and allowed["context"] == {"sub": "user-1"}
    (statement,) = allowed["policyDocument"]["Statement"]
    assert statement == {"Action": "execute-api:Invoke", "Effect": "Allow", "Resource": METHOD_ARN}
    access = _token(issuer, keys["good"], token_use="access", aud=None, client_id=CLIENT_ID, sub="user-2")
    assert _authorize(access)["principalId"] == "user-2"


@pytest.mark.parametrize(
    "case",
    ["missing", "garbage", "expired", "other_key", "other_issuer", "other_client", "unknown_kid", "no_token_use"],
)
def test_a_bad_token_is_refused_with_unauthorized(issuer: str, keys: dict[str, Any], case: str) -> None:
    good = keys["good"]
    token = {
        "missing": None,
        "garbage": "not.a.jwt",
        "expired": _token(issuer, good, exp=int(time.time()) - 60, iat=int(time.time()) - 700),
        "other_key": _token(issuer, keys["other"]),
        "other_issuer": _token(issuer + "x", good),
        "other_client": _token(issuer, good, aud="someone-else"),
        "unknown_kid": _token(issuer, good, kid="k9"),
        "no_token_use": _token(issuer, good, token_use=None),
    }[case]
    with pytest.raises(Exception, match=r"^Unauthorized$"):  # API Gateway's cue for a 401
        _authorize(token)
