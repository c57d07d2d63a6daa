"""The answers each route documents: its success body and every error status it can return, all
with the one error schema, so /openapi.json lists exactly what the API answers."""

from __future__ import annotations

import posixpath
from typing import Any

from shared.models.api import ErrorResponse

ERRORS: dict[int, str] = {
    400: "Malformed JSON (`malformed_json`)",
    401: "Missing or invalid bearer token (`unauthorized`)",
    404: "No such build (or not yours), task or file (`not_found`)",
    409: "The build or task is not in a state that allows this (`conflict`)",
    413: "The request body is larger than 2 MiB (`too_large`)",
    415: "The request body is not declared as JSON (`unsupported_media_type`)",
    422: "A field is invalid; `details` names it (`invalid_request`)",
    429: "Throttled (`throttled`); retry later",
}

# A file's content type follows its extension; anything else is served as UTF-8 text.
_BY_EXTENSION = {
    ".json": "application/json",
    ".html": "text/html",
    ".htm": "text/html",
    ".css": "text/css",
    ".js": "text/javascript",
    ".mjs": "text/javascript",
    ".cjs": "text/javascript",
    ".svg": "image/svg+xml",
    ".md": "text/markdown",
}
_TEXT = "text/plain"
FILE_CONTENT_TYPES = sorted({*_BY_EXTENSION.values(), _TEXT})


def file_content_type(path: str) -> str:
    media = _BY_EXTENSION.get(posixpath.splitext(path)[1].lower(), _TEXT)
    return media if media == "application/json" else f"{media}; charset=utf-8"


def answers(status: int | None, model: Any, description: str, *errors: int) -> dict[int, Any]:
    """`responses=` for a route: its success `status` with `model`, then each error status."""
    out: dict[int, Any] = {}
    if status is not None:
        out[status] = {"description": description, "content": {"application/json": {"model": model}}}
    for code in errors:
        out[code] = {"description": ERRORS[code], "content": {"application/json": {"model": ErrorResponse}}}
    return out
