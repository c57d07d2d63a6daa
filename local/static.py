"""The web dashboard's built files (web/dist), served by `stepwise serve` at `/` on the API's origin.

Only `/`, `/index.html`, `/config.json`, `/favicon.svg` and `/assets/*` are static; every other
path is the API's. Pages are hash routes (`/#/builds/{id}`), so no page path meets an API path.
`/config.json` tells the app to use this origin for the API and `/ws` for live events, and to sign in
with a bearer token (the one `stepwise serve` prints in the dashboard's address), or, when the
COGNITO_* settings name a user pool, through its hosted UI (authorization code with PKCE),
as the deployed app does; the CSP then lets the page reach the pool's issuer and hosted UI.
"""

from __future__ import annotations

import json
import mimetypes
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from shared.settings import get_settings

DIST = Path(__file__).resolve().parent.parent / "web" / "dist"

# The app loads nothing from elsewhere: scripts, styles and calls stay on this origin.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'self'; "
    "form-action 'self'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",  # the sign-in address carries a token
    "X-Frame-Options": "DENY",
}

LOCAL_CONFIG: dict[str, Any] = {"apiUrl": "", "wsUrl": "/ws", "auth": {"kind": "token"}}


def _config() -> dict[str, Any]:
    settings = get_settings()
    if not settings.cognito:
        return LOCAL_CONFIG
    auth = {
        "kind": "cognito",
        "authority": settings.cognito_issuer,
        "clientId": settings.cognito_client_id,
        "domain": settings.cognito_domain,
    }
    return {**LOCAL_CONFIG, "auth": auth}


def _security_headers() -> dict[str, str]:
    settings = get_settings()
    if not settings.cognito:
        return SECURITY_HEADERS
    # The app reads the pool's discovery document and keys, and exchanges the code at the hosted UI.
    extra = " ".join(_origin(u) for u in (settings.cognito_issuer, settings.cognito_domain))
    return {
        **SECURITY_HEADERS,
        "Content-Security-Policy": CSP.replace("connect-src 'self'", f"connect-src 'self' {extra}"),
    }


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


NOT_BUILT = """<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Stepwise</title></head>
<body><main><h1>The dashboard is not built yet</h1>
<p>Run <code>bash scripts/serve.sh</code> (it builds the dashboard, then serves it), or build it by hand:
<code>npm --prefix web ci &amp;&amp; npm --prefix web run build</code>, then reload this page.</p>
<p>The API itself is up: see <a href="/openapi.json">/openapi.json</a>.</p></main></body></html>"""

Answer = tuple[int, dict[str, str], bytes]


def is_built(dist: Path = DIST) -> bool:
    return (dist / "index.html").is_file()


def static_answer(method: str, path: str, dist: Path = DIST) -> Answer | None:
    """The answer for a dashboard path, or None when the path is the API's."""
    if method not in ("GET", "HEAD"):
        return None
    if path == "/config.json":
        return 200, {"Content-Type": "application/json", "Cache-Control": "no-cache"}, json.dumps(_config()).encode()
    if path in ("/", "/index.html"):
        if not is_built(dist):
            return 200, {"Content-Type": "text/html; charset=utf-8", **_security_headers()}, NOT_BUILT.encode()
        return _file(dist, "index.html", "no-cache")
    if path == "/favicon.svg" or path.startswith("/assets/"):
        return _file(dist, path.lstrip("/"), "public, max-age=31536000, immutable") or _missing()
    return None


def _file(dist: Path, relative: str, cache: str) -> Answer | None:
    root = dist.resolve()
    target = (root / relative).resolve()
    if not target.is_relative_to(root) or not target.is_file():
        return None
    ctype = mimetypes.guess_type(target.name)[0] or "application/octet-stream"
    if ctype.startswith("text/") or ctype in ("application/javascript", "image/svg+xml"):
        ctype += "; charset=utf-8"
    return 200, {"Content-Type": ctype, "Cache-Control": cache, **_security_headers()}, target.read_bytes()


def _missing() -> Answer:
    body = json.dumps({"error": {"code": "not_found", "message": "No such file in the dashboard."}})
    return 404, {"Content-Type": "application/json"}, body.encode()
