"""A Cognito user pool's sign-in, as a real HTTP server speaking its wire format (moto serves the
user-pool APIs but not the hosted UI's /oauth2 endpoints):

- `{issuer}/.well-known/openid-configuration` and `{issuer}/.well-known/jwks.json`, as
  cognito-idp.{region}.amazonaws.com/{poolId} serves them (CORS-readable by any origin);
- `{domain}/oauth2/authorize`: the authorization code flow with PKCE (S256 only); answers a sign-in
  page, whose form posts to `/login` and is redirected to `redirect_uri?code=…&state=…`;
- `{domain}/oauth2/token`: exchanges a code once, only with the `code_verifier` whose SHA-256 is
  the challenge it was issued for, the same client and redirect URI; answers Cognito's ID, access
  and refresh tokens (RS256 JWTs with a `kid` from the published JWKS).

Issuer and hosted-UI domain share one server here (paths differ); on AWS they are two hosts.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import secrets
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from werkzeug import Request, Response
from werkzeug.serving import make_server

POOL_ID = "us-east-1_StepWise1"
CLIENT_ID = "5stepwisedashboardclient0"
TOKEN_LIFETIME_S = 3600


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclass
class _Grant:
    client_id: str
    redirect_uri: str
    challenge: str
    scope: str
    username: str


@dataclass
class FakeCognito:
    callbacks: list[str]
    users: dict[str, str] = field(default_factory=dict)  # username -> sub
    exchanged: list[dict[str, str]] = field(default_factory=list)  # successful code exchanges
    refused: list[str] = field(default_factory=list)  # why a token request was refused

    def __post_init__(self) -> None:
        self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self._kid = secrets.token_hex(8)
        self._grants: dict[str, _Grant] = {}
        self._lock = threading.Lock()
        self._server = make_server("127.0.0.1", 0, self._app, threaded=True)
        self.base = f"http://127.0.0.1:{self._server.server_port}"
        self.issuer = f"{self.base}/{POOL_ID}"
        self.domain = self.base
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> FakeCognito:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()

    def sub(self, username: str) -> str:
        return self.users.setdefault(username, str(uuid.uuid5(uuid.NAMESPACE_URL, f"{POOL_ID}/{username}")))

    def id_token(self, username: str, *, client_id: str = CLIENT_ID, key: Any = None) -> str:
        """An ID token as Cognito issues it (`key`: sign with another key instead of the pool's)."""
        now = int(time.time())
        claims = {
            "sub": self.sub(username),
            "aud": client_id,
            "iss": self.issuer,
            "token_use": "id",
            "auth_time": now,
            "iat": now,
            "exp": now + TOKEN_LIFETIME_S,
            "email": f"{username}@example.com",
            "email_verified": True,
            "cognito:username": username,
        }
        return jwt.encode(claims, key or self._key, algorithm="RS256", headers={"kid": self._kid})

    def _access_token(self, username: str, client_id: str, scope: str) -> str:
        now = int(time.time())
        claims = {
            "sub": self.sub(username),
            "client_id": client_id,
            "iss": self.issuer,
            "token_use": "access",
            "scope": scope,
            "auth_time": now,
            "iat": now,
            "exp": now + TOKEN_LIFETIME_S,
            "username": username,
        }
        return jwt.encode(claims, self._key, algorithm="RS256", headers={"kid": self._kid})

    # --- HTTP ---------------------------------------------------------------------------------
    @Request.application  # type: ignore[misc]
    def _app(self, request: Request) -> Response:
        if request.method == "OPTIONS":
            return self._cors(Response(status=204))
        routes = {
            ("GET", f"/{POOL_ID}/.well-known/openid-configuration"): self._discovery,
            ("GET", f"/{POOL_ID}/.well-known/jwks.json"): self._jwks,
            ("GET", "/oauth2/authorize"): self._authorize,
            ("POST", "/login"): self._login,
            ("POST", "/oauth2/token"): self._token,
        }
        handler = routes.get((request.method, request.path))
        return handler(request) if handler else Response("not found", status=404)

    @staticmethod
    def _cors(response: Response) -> Response:
        response.headers["Access-Control-Allow-Origin"] = "*"
        response.headers["Access-Control-Allow-Headers"] = "Content-Type, Authorization"
        response.headers["Access-Control-Allow-Methods"] = "GET, POST, OPTIONS"
        return response

    def _json(self, body: Any, status: int = 200) -> Response:
        return self._cors(Response(json.dumps(body), status=status, content_type="application/json"))

    def _discovery(self, _: Request) -> Response:
        return self._json(
            {
                "issuer": self.issuer,
                "authorization_endpoint": f"{self.domain}/oauth2/authorize",
                "token_endpoint": f"{self.domain}/oauth2/token",
                "userinfo_endpoint": f"{self.domain}/oauth2/userInfo",
                "jwks_uri": f"{self.issuer}/.well-known/jwks.json",
                "response_types_supported": ["code", "token"],
                "scopes_supported": ["openid", "email", "phone", "profile"],
                "subject_types_supported": ["public"],
                "id_token_signing_alg_values_supported": ["RS256"],
                "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
            }
        )

    def _jwks(self, _: Request) -> Response:
        public = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self._key.public_key()))
        return self._json({"keys": [{**public, "kid": self._kid, "alg": "RS256", "use": "sig"}]})

    def _authorize(self, request: Request) -> Response:
        q = request.args
        problem = (
            "unsupported_response_type"
            if q.get("response_type") != "code"
            else "invalid_client"
            if q.get("client_id") != CLIENT_ID
            else "redirect_mismatch"
            if q.get("redirect_uri") not in self.callbacks
            else "invalid_request: PKCE (S256) is required"
            if q.get("code_challenge_method") != "S256" or not q.get("code_challenge")
            else None
        )
        if problem:
            return Response(f"<p>{html.escape(problem)}</p>", status=400, content_type="text/html")
        hidden = "".join(
            f'<input type="hidden" name="{k}" value="{html.escape(q.get(k, ""))}">'
            for k in ("client_id", "redirect_uri", "state", "code_challenge", "scope")
        )
        page = f"""<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Signin</title></head>
<body><main><h1>Sign in with your username and password</h1><form method="post" action="/login">{hidden}
<label for="username">Username</label><input id="username" name="username" autocomplete="username">
<label for="password">Password</label><input id="password" name="password" type="password">
<button type="submit" name="signInSubmitButton">Sign in</button></form></main></body></html>"""
        return Response(page, content_type="text/html")

    def _login(self, request: Request) -> Response:
        f = request.form
        if not f.get("username") or not f.get("password") or f.get("redirect_uri") not in self.callbacks:
            return Response("<p>Incorrect username or password.</p>", status=400, content_type="text/html")
        code = str(uuid.uuid4())
        with self._lock:
            self._grants[code] = _Grant(
                client_id=f.get("client_id", ""),
                redirect_uri=f.get("redirect_uri", ""),
                challenge=f.get("code_challenge", ""),
                scope=f.get("scope", "openid"),
                username=f["username"],
            )
        return Response(
            status=302,
            headers={"Location": f"{f['redirect_uri']}?{urlencode({'code': code, 'state': f.get('state', '')})}"},
        )

    def _token(self, request: Request) -> Response:
        f = request.form
        if request.mimetype != "application/x-www-form-urlencoded":
            return self._refuse("invalid_request", "not form-encoded")
        if f.get("grant_type") != "authorization_code":
            return self._refuse("unsupported_grant_type", f"grant_type {f.get('grant_type')}")
        with self._lock:
            grant = self._grants.pop(f.get("code", ""), None)  # a code is good once
        if grant is None:
            return self._refuse("invalid_grant", "unknown or used code")
        verifier = f.get("code_verifier", "")
        if _b64url(hashlib.sha256(verifier.encode()).digest()) != grant.challenge:
            return self._refuse("invalid_grant", "code_verifier does not match the challenge")
        if f.get("client_id") != grant.client_id or f.get("redirect_uri") != grant.redirect_uri:
            return self._refuse("invalid_grant", "client or redirect_uri differs from the authorization")
        self.exchanged.append({"username": grant.username, "client_id": grant.client_id})
        return self._json(
            {
                "id_token": self.id_token(grant.username, client_id=grant.client_id),
                "access_token": self._access_token(grant.username, grant.client_id, grant.scope),
                "refresh_token": secrets.token_urlsafe(32),
                "expires_in": TOKEN_LIFETIME_S,
                "token_type": "Bearer",
            }
        )

    def _refuse(self, error: str, why: str) -> Response:
        self.refused.append(why)
        return self._json({"error": error}, status=400)
