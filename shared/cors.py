"""Which browser origins may call the API, and the CORS headers an answer carries for them.

One configuration (STEPWISE_CORS_ORIGINS: comma-separated origins, `*` by default since auth is a
bearer token, never a cookie) used by the API function for every answer, and by `stepwise serve`
for the answers it makes itself (preflights, 401), as API Gateway does on AWS."""

from __future__ import annotations

from functools import lru_cache

from aws_lambda_powertools.event_handler import CORSConfig

ALLOW_HEADERS = ["Authorization", "Content-Type", "Idempotency-Key"]
EXPOSE_HEADERS = ["Allow", "Retry-After"]
MAX_AGE_S = 600


def config(origins: list[str]) -> CORSConfig:
    return CORSConfig(
        allow_origin=origins[0],
        extra_origins=origins[1:],
        allow_headers=ALLOW_HEADERS,
        expose_headers=EXPOSE_HEADERS,
        max_age=MAX_AGE_S,
    )


@lru_cache(maxsize=8)
def _config(origins: str) -> CORSConfig:
    return config(origins.split(","))


def headers_for(origin: str | None, origins: str) -> dict[str, str]:
    """The CORS headers for a request from `origin` (none when it is absent or not allowed)."""
    cors = _config(origins)
    allowed = cors.allowed_origin(origin) if origin else None
    if allowed is None:
        return {}
    headers = cors.to_dict(allowed)
    if allowed != "*":
        headers["Vary"] = "Origin"
    return headers


def preflight_headers(origin: str | None, origins: str, methods: list[str]) -> dict[str, str]:
    """A preflight's answer: the CORS headers and the methods the path has."""
    headers = headers_for(origin, origins)
    if headers:
        headers["Access-Control-Allow-Methods"] = ",".join(sorted({*methods, "OPTIONS"}))
    return headers
