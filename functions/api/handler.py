"""HTTP API: Powertools REST resolver over shared.logic.builds (routes, statuses and schemas are
described in docs/api.md and served as /openapi.json and /docs).

The caller is the authorizer's `sub` (Cognito on AWS; `stepwise serve` fills the same field from
STEPWISE_LOCAL_TOKENS). Domain errors and validation errors become `{"error": {...}}` here, once.
Every answer carries the CORS headers of an allowed origin; a method a path does not have is 405
with `Allow`.
"""

from __future__ import annotations

import json
import os
import re
from typing import Annotated, Any
from urllib.parse import quote, unquote

from aws_lambda_powertools.event_handler import Response, content_types
from aws_lambda_powertools.event_handler.exceptions import NotFoundError
from aws_lambda_powertools.event_handler.openapi.exceptions import (
    RequestUnsupportedContentType,
    RequestValidationError,
)
from aws_lambda_powertools.event_handler.openapi.models import HTTPBearer
from aws_lambda_powertools.event_handler.openapi.params import Header, Path, Query
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import BaseModel

from functions.api.resolver import PerThreadRestResolver
from functions.api.responses import FILE_CONTENT_TYPES, answers, file_content_type
from shared import cors
from shared.constants import STEPWISE_CORS_ORIGINS
from shared.errors import Conflict, StepwiseError, TooLarge, Unauthorized
from shared.logic import builds as logic
from shared.models.api import (
    CURSOR_PATTERN,
    ApprovalResult,
    BuildCreated,
    BuildList,
    CancelResult,
    EventPage,
    TaskActionResult,
)
from shared.models.build import ApprovalRequest, BuildView, CreateBuildRequest
from shared.models.plan import FileInfo
from shared.observability import correlate, lambda_handler, logger

MAX_BODY_BYTES = 2 * 1024 * 1024
MAX_SEQ = 10**15  # larger than any log; keeps every number a DynamoDB key condition can hold
ORIGINS = os.environ.get(STEPWISE_CORS_ORIGINS, "*").strip() or "*"
BEARER: list[dict[str, list[str]]] = [{"bearerAuth": []}]

app = PerThreadRestResolver(enable_validation=True, cors=cors.config(ORIGINS.split(",")))
app.configure_openapi(
    title="Stepwise API",
    version="1.0.0",
    description="Turn a prompt into a streamed task plan, run it as a DAG, watch every step. "
    'Errors are `{"error": {"code", "message", "details"?}}`. See docs/api.md.',
    security_schemes={"bearerAuth": HTTPBearer(description="`Authorization: Bearer <token>`")},
)

BuildIdParam = Annotated[str, Path(min_length=1, max_length=64, description="bld_…")]
TaskIdParam = Annotated[str, Path(min_length=1, max_length=128)]


def _error(
    status: int, code: str, message: str, details: Any = None, headers: dict[str, str] | None = None
) -> Response[Any]:
    body: dict[str, Any] = {"code": code, "message": message}
    if isinstance(details, list) and details:
        body["details"] = details
    return Response(
        status_code=status,
        content_type=content_types.APPLICATION_JSON,
        body=json.dumps({"error": body}),
        headers=headers,
    )


@app.exception_handler(StepwiseError)
def _domain_error(exc: StepwiseError) -> Response[Any]:
    if exc.http_status >= 500:
        logger.exception("domain error", extra={"code": exc.code})
    return _error(exc.http_status, exc.code, exc.message, exc.details)


@app.exception_handler(RequestValidationError)
def _validation_error(exc: RequestValidationError) -> Response[Any]:
    errors = exc.errors()
    if any(e.get("type") == "json_invalid" for e in errors):
        return _error(400, "malformed_json", "The request body is not valid JSON.")
    details = []
    for e in errors:
        loc = [str(p) for p in e.get("loc", ()) if p not in ("body", "query", "path", "header")]
        details.append({"field": ".".join(loc) or "body", "message": str(e.get("msg", "invalid"))})
    fields = ", ".join(sorted({d["field"] for d in details}))
    return _error(422, "invalid_request", f"Invalid field(s): {fields}", details)


@app.exception_handler(RequestUnsupportedContentType)
def _unsupported_content_type(exc: RequestUnsupportedContentType) -> Response[Any]:
    return _error(415, "unsupported_media_type", "The request body must be JSON (Content-Type: application/json).")


@app.not_found
def _not_found(exc: NotFoundError) -> Response[Any]:
    event = app.current_event
    allowed = allowed_methods(unquote(event.path))
    if allowed and event.http_method not in allowed:
        return _error(
            405,
            "method_not_allowed",
            f"{event.http_method} is not allowed on this path; it answers {', '.join(allowed)}.",
            headers={"Allow": ", ".join(allowed)},
        )
    return _error(404, "not_found", "No such route.")


@app.exception_handler(Exception)
def _unexpected(exc: Exception) -> Response[Any]:
    logger.exception("unhandled error")
    return _error(500, "internal_error", "Something went wrong on our side; the request was not completed.")


# Every (method, path) the API answers; a test holds it equal to the OpenAPI document's operations.
ROUTES: tuple[tuple[str, str], ...] = (
    ("POST", "/builds"),
    ("GET", "/builds"),
    ("GET", "/builds/{buildId}"),
    ("GET", "/builds/{buildId}/events"),
    ("POST", "/builds/{buildId}/approval"),
    ("POST", "/builds/{buildId}/cancel"),
    ("POST", "/builds/{buildId}/tasks/{taskId}/retry"),
    ("POST", "/builds/{buildId}/tasks/{taskId}/skip"),
    ("GET", "/builds/{buildId}/files"),
    ("GET", "/builds/{buildId}/files/{path}"),
    ("GET", "/openapi.json"),
    ("GET", "/docs"),
)
_ROUTE_PATTERNS = [
    (
        re.compile(
            "^" + re.sub(r"\\{(\w+)\\}", lambda m: ".+" if m.group(1) == "path" else "[^/]+", re.escape(p)) + "/*$"
        ),
        m,
    )
    for m, p in ROUTES
]


def allowed_methods(path: str) -> list[str]:
    """The methods the API answers on `path` (empty: no such path)."""
    methods = {m for rule, m in _ROUTE_PATTERNS if rule.match(path)}
    return sorted(methods | {"OPTIONS"}) if methods else []


def _accepted(result: BaseModel) -> Response[Any]:
    return Response(status_code=202, content_type=content_types.APPLICATION_JSON, body=result.model_dump_json())


def _owner() -> str:
    authorizer = app.current_event.request_context.authorizer
    claims = authorizer.claims or {}
    sub = claims.get("sub") or authorizer.principal_id
    if not sub:
        raise Unauthorized("missing or invalid bearer token")
    return str(sub)


# --- routes ---------------------------------------------------------------------------------------
@app.post(
    "/builds",
    status_code=202,
    summary="Start a build",
    security=BEARER,
    responses=answers(202, BuildCreated, "The build is accepted and planning", 400, 401, 409, 413, 415, 422, 429),
)
def create_build(
    body: CreateBuildRequest,
    idempotency_key: Annotated[
        str | None,
        Header(
            alias="Idempotency-Key",
            min_length=1,
            max_length=255,
            description="Same key and body within 24 h: the same build, no second run",
        ),
    ] = None,
) -> Response[Any]:
    owner = _owner()
    result = _create_idempotent(owner, idempotency_key, body) if idempotency_key else logic.create_build(owner, body)
    correlate(result.buildId)
    return _accepted(result)


def _create_idempotent(owner: str, key: str, body: CreateBuildRequest) -> BuildCreated:
    from aws_lambda_powertools.utilities.idempotency import (
        DynamoDBPersistenceLayer,
        IdempotencyConfig,
        idempotent_function,
    )
    from aws_lambda_powertools.utilities.idempotency.exceptions import (
        IdempotencyAlreadyInProgressError,
        IdempotencyValidationError,
    )

    from shared.logic.services import services

    config = IdempotencyConfig(
        event_key_jmespath="[owner, key]",
        payload_validation_jmespath="body",
        expires_after_seconds=24 * 3600,
        raise_on_no_idempotency_key=True,
    )
    if app.lambda_context is not None:
        config.register_lambda_context(app.lambda_context)
    store = DynamoDBPersistenceLayer(table_name=services().settings.idempotency_table)

    @idempotent_function(data_keyword_argument="request", config=config, persistence_store=store)
    def once(request: dict[str, Any]) -> dict[str, Any]:
        return logic.create_build(owner, CreateBuildRequest.model_validate(request["body"])).model_dump(mode="json")

    try:
        return BuildCreated.model_validate(
            once(request={"owner": owner, "key": key, "body": body.model_dump(mode="json")})
        )
    except IdempotencyValidationError:
        raise Conflict(
            "Idempotency-Key was already used with a different body", details=[{"field": "Idempotency-Key"}]
        ) from None
    except IdempotencyAlreadyInProgressError:
        raise Conflict(
            "A request with this Idempotency-Key is still in progress", details=[{"field": "Idempotency-Key"}]
        ) from None


@app.get(
    "/builds",
    summary="The caller's builds, newest first",
    security=BEARER,
    responses=answers(200, BuildList, "A page of builds", 401, 422, 429),
)
def list_builds(
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[str | None, Query(pattern=CURSOR_PATTERN, description="`next` of the previous page")] = None,
) -> BuildList:
    return logic.list_builds(_owner(), limit, cursor)


@app.get(
    "/builds/<buildId>",
    summary="A build: status, plan with per-task state, metrics",
    security=BEARER,
    responses=answers(200, BuildView, "The build", 401, 404, 422, 429),
)
def get_build(buildId: BuildIdParam) -> BuildView:
    correlate(buildId)
    return logic.build_view(_owner(), buildId)


@app.get(
    "/builds/<buildId>/events",
    summary="The build's event log after seq `after` (long-poll with `wait`)",
    security=BEARER,
    responses=answers(200, EventPage, "Events in seq order", 401, 404, 422, 429),
)
def get_events(
    buildId: BuildIdParam,
    after: Annotated[int, Query(ge=0, le=MAX_SEQ, description="Return events with seq > after")] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    wait: Annotated[
        float,
        Query(
            ge=0,
            le=logic.MAX_WAIT_SECONDS,
            description="Seconds to hold the answer while no event follows `after`; "
            "answered as soon as one is recorded, or empty when `wait` runs out",
        ),
    ] = 0,
) -> EventPage:
    return logic.list_events(_owner(), buildId, after, limit, wait)


@app.post(
    "/builds/<buildId>/approval",
    summary="Approve, reject, or approve an edited plan",
    security=BEARER,
    responses=answers(200, ApprovalResult, "The decision", 400, 401, 404, 409, 413, 415, 422, 429),
)
def post_approval(buildId: BuildIdParam, body: ApprovalRequest) -> ApprovalResult:
    correlate(buildId)
    return logic.approve(_owner(), buildId, body)


@app.post(
    "/builds/<buildId>/cancel",
    status_code=202,
    summary="Stop the build; no task starts afterwards",
    security=BEARER,
    responses=answers(202, CancelResult, "Cancelled", 401, 404, 409, 422, 429),
)
def post_cancel(buildId: BuildIdParam) -> Response[Any]:
    correlate(buildId)
    return _accepted(logic.cancel(_owner(), buildId))


@app.post(
    "/builds/<buildId>/tasks/<taskId>/retry",
    status_code=202,
    summary="Re-run a failed, timed-out, skipped or halted task and its skipped dependents",
    security=BEARER,
    responses=answers(202, TaskActionResult, "Queued", 401, 404, 409, 422, 429),
)
def post_retry(buildId: BuildIdParam, taskId: TaskIdParam) -> Response[Any]:
    correlate(buildId)
    return _accepted(logic.retry_task(_owner(), buildId, taskId))


@app.post(
    "/builds/<buildId>/tasks/<taskId>/skip",
    status_code=202,
    summary="Give up on a failed or timed-out task; its dependents run without its output",
    security=BEARER,
    responses=answers(202, TaskActionResult, "Skipped", 401, 404, 409, 422, 429),
)
def post_skip(buildId: BuildIdParam, taskId: TaskIdParam) -> Response[Any]:
    correlate(buildId)
    return _accepted(logic.skip_task(_owner(), buildId, taskId))


@app.get(
    "/builds/<buildId>/files",
    summary="The build's files (latest version of each path)",
    security=BEARER,
    responses=answers(200, list[FileInfo], "Files", 401, 404, 422, 429),
)
def get_files(buildId: BuildIdParam) -> list[FileInfo]:
    return logic.list_files(_owner(), buildId)


@app.get(
    "/builds/<buildId>/files/<path>",
    summary="One file's content",
    security=BEARER,
    responses={
        200: {
            "description": "The file's bytes, typed by its extension",
            "content": {
                ctype: {"schema": {} if ctype == "application/json" else {"type": "string"}}
                for ctype in FILE_CONTENT_TYPES
            },
        },
        **answers(None, None, "", 401, 404, 422, 429),
    },
)
def get_file(buildId: BuildIdParam, path: Annotated[str, Path(min_length=1, max_length=1024)]) -> Response[Any]:
    name = unquote(path)
    content = logic.get_file(_owner(), buildId, name)
    return Response(
        status_code=200,
        content_type=file_content_type(name),
        body=content.decode("utf-8", errors="replace"),
    )


@app.get(
    "/openapi.json",
    summary="This document",
    enable_validation=False,
    responses={
        200: {"description": "The OpenAPI document", "content": {"application/json": {"schema": {"type": "object"}}}}
    },
)
def openapi() -> Response[Any]:
    return Response(status_code=200, content_type=content_types.APPLICATION_JSON, body=app.get_openapi_json_schema())


app.enable_swagger(path="/docs", title="Stepwise API")  # Swagger UI, its assets served inline (no CDN)


_FILE_ROUTE = re.compile(r"^(/builds/[^/]+/files/)(.+)$")


def _encode_greedy_path_of(path: str) -> str:
    """API Gateway passes `{path+}` with its slashes; the resolver's segments take no slash."""
    m = _FILE_ROUTE.match(path or "")
    if m and "/" in m.group(2):
        return m.group(1) + quote(m.group(2), safe="")
    return path


def _origin(event: dict[str, Any]) -> str | None:
    for k, v in (event.get("headers") or {}).items():
        if k.lower() == "origin":
            return str(v)
    return None


def _answer(event: dict[str, Any], status: int, headers: dict[str, str], body: str = "") -> dict[str, Any]:
    return {"statusCode": status, "headers": {**headers, **cors.headers_for(_origin(event), ORIGINS)}, "body": body}


@lambda_handler
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    if event.get("httpMethod") == "OPTIONS":  # a preflight (API Gateway answers these itself on AWS)
        methods = allowed_methods(event.get("path") or "")
        if not methods:
            return _answer(
                event,
                404,
                {"Content-Type": "application/json"},
                json.dumps({"error": {"code": "not_found", "message": "No such route."}}),
            )
        headers = cors.preflight_headers(_origin(event), ORIGINS, methods)
        return {"statusCode": 204, "headers": {"Allow": ", ".join(methods), **headers}, "body": ""}
    body = event.get("body") or ""
    if len(body) > MAX_BODY_BYTES:
        exc = TooLarge(f"request body larger than {MAX_BODY_BYTES} bytes")
        return _answer(
            event,
            413,
            {"Content-Type": "application/json"},
            json.dumps({"error": {"code": exc.code, "message": exc.message}}),
        )
    if body and not _is_json(event) and _takes_body(event):
        return _answer(
            event,
            415,
            {"Content-Type": "application/json"},
            json.dumps(
                {
                    "error": {
                        "code": "unsupported_media_type",
                        "message": "The request body must be JSON (Content-Type: application/json).",
                    }
                }
            ),
        )
    event["path"] = _encode_greedy_path_of(event.get("path") or "")
    return app.resolve(event, context)


_BODY_ROUTES = re.compile(r"^/builds/?$|^/builds/[^/]+/approval/?$")


def _takes_body(event: dict[str, Any]) -> bool:
    return event.get("httpMethod") == "POST" and bool(_BODY_ROUTES.match(event.get("path") or ""))


def _is_json(event: dict[str, Any]) -> bool:
    """A body declared as JSON (`application/json`, `…+json`), or not declared at all."""
    ctype = next((str(v) for k, v in (event.get("headers") or {}).items() if k.lower() == "content-type"), "")
    media = ctype.split(";", 1)[0].strip().lower()
    return media in ("", "application/json") or media.endswith("+json")
