"""HTTP API (CONTRACT §2): Powertools REST resolver over shared.logic.builds.

The caller is the authorizer's `sub` (Cognito on AWS; `stepwise serve` fills the same field from
STEPWISE_LOCAL_TOKENS). Domain errors and validation errors become `{"error": {...}}` here, once.
"""

from __future__ import annotations

import json
import os
import re
from typing import Annotated, Any
from urllib.parse import quote, unquote

from aws_lambda_powertools.event_handler import APIGatewayRestResolver, CORSConfig, Response, content_types
from aws_lambda_powertools.event_handler.exceptions import NotFoundError
from aws_lambda_powertools.event_handler.openapi.exceptions import RequestValidationError
from aws_lambda_powertools.event_handler.openapi.params import Header, Query
from aws_lambda_powertools.utilities.typing import LambdaContext

from shared.constants import CORS_ALLOW_ORIGIN
from shared.errors import Conflict, StepwiseError, TooLarge, Unauthorized
from shared.logic import builds as logic
from shared.models.build import ApprovalRequest, BuildView, CreateBuildRequest
from shared.models.plan import FileInfo
from shared.observability import correlate, lambda_handler, logger

MAX_BODY_BYTES = 2 * 1024 * 1024
_origin = os.environ.get(CORS_ALLOW_ORIGIN)
app = APIGatewayRestResolver(
    enable_validation=True,
    cors=CORSConfig(
        allow_origin=_origin, allow_headers=["Authorization", "Content-Type", "Idempotency-Key"], max_age=600
    )
    if _origin
    else None,
)


def _error(status: int, code: str, message: str, details: Any = None) -> Response[Any]:
    body: dict[str, Any] = {"code": code, "message": message}
    if details is not None:
        body["details"] = details
    return Response(status_code=status, content_type=content_types.APPLICATION_JSON, body=json.dumps({"error": body}))


@app.exception_handler(StepwiseError)
def _domain_error(exc: StepwiseError) -> Response[Any]:
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


@app.not_found
def _not_found(exc: NotFoundError) -> Response[Any]:
    return _error(404, "not_found", "No such route.")


@app.exception_handler(Exception)
def _unexpected(exc: Exception) -> Response[Any]:
    logger.exception("unhandled error")
    return _error(500, "internal_error", "Something went wrong on our side; the request was not completed.")


def _owner() -> str:
    authorizer = app.current_event.request_context.authorizer
    claims = authorizer.claims or {}
    sub = claims.get("sub") or authorizer.principal_id
    if not sub:
        raise Unauthorized("missing or invalid bearer token")
    return str(sub)


def _json(status: int, payload: Any) -> Response[Any]:
    return Response(
        status_code=status, content_type=content_types.APPLICATION_JSON, body=json.dumps(payload, default=str)
    )


@app.post("/builds")
def create_build(
    body: CreateBuildRequest,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key", max_length=255)] = None,
) -> Response[Any]:
    owner = _owner()
    result = _create_idempotent(owner, idempotency_key, body) if idempotency_key else logic.create_build(owner, body)
    correlate(result["buildId"])
    return _json(202, result)


def _create_idempotent(owner: str, key: str, body: CreateBuildRequest) -> dict[str, Any]:
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
        return logic.create_build(owner, CreateBuildRequest.model_validate(request["body"]))

    try:
        return once(request={"owner": owner, "key": key, "body": body.model_dump(mode="json")})
    except IdempotencyValidationError:
        raise Conflict(
            "Idempotency-Key was already used with a different body", details=[{"field": "Idempotency-Key"}]
        ) from None
    except IdempotencyAlreadyInProgressError:
        raise Conflict(
            "A request with this Idempotency-Key is still in progress", details=[{"field": "Idempotency-Key"}]
        ) from None


@app.get("/builds")
def list_builds(
    limit: Annotated[int, Query(ge=1, le=100)] = 20, cursor: Annotated[str | None, Query(max_length=2048)] = None
) -> Response[Any]:
    return _json(200, logic.list_builds(_owner(), limit, cursor))


@app.get("/builds/<buildId>")
def get_build(buildId: str) -> BuildView:
    correlate(buildId)
    return logic.build_view(_owner(), buildId)


@app.get("/builds/<buildId>/events")
def get_events(
    buildId: str, after: Annotated[int, Query(ge=0)] = 0, limit: Annotated[int, Query(ge=1, le=1000)] = 100
) -> Response[Any]:
    return _json(200, logic.list_events(_owner(), buildId, after, limit))


@app.post("/builds/<buildId>/approval")
def post_approval(buildId: str, body: ApprovalRequest) -> Response[Any]:
    correlate(buildId)
    return _json(200, logic.approve(_owner(), buildId, body))


@app.post("/builds/<buildId>/cancel")
def post_cancel(buildId: str) -> Response[Any]:
    correlate(buildId)
    return _json(202, logic.cancel(_owner(), buildId))


@app.post("/builds/<buildId>/tasks/<taskId>/retry")
def post_retry(buildId: str, taskId: str) -> Response[Any]:
    correlate(buildId)
    return _json(202, logic.retry_task(_owner(), buildId, taskId))


@app.get("/builds/<buildId>/files")
def get_files(buildId: str) -> list[FileInfo]:
    return logic.list_files(_owner(), buildId)


@app.get("/builds/<buildId>/files/<path>")
def get_file(buildId: str, path: str) -> Response[Any]:
    content = logic.get_file(_owner(), buildId, unquote(path))
    ctype = "text/plain; charset=utf-8"
    if path.endswith(".json"):
        ctype = "application/json"
    elif path.endswith(".html"):
        ctype = "text/html; charset=utf-8"
    return Response(status_code=200, content_type=ctype, body=content.decode("utf-8", errors="replace"))


@app.get("/openapi.json")
def openapi() -> Response[Any]:
    schema = app.get_openapi_json_schema(
        title="Stepwise API", version="1.0.0", description="Transparent, modular AI builds."
    )
    return Response(status_code=200, content_type=content_types.APPLICATION_JSON, body=schema)


_FILE_ROUTE = re.compile(r"^(/builds/[^/]+/files/)(.+)$")


def _encode_greedy_path(event: dict[str, Any]) -> None:
    """API Gateway passes `{path+}` with its slashes; the resolver's segments take no slash."""
    path = event.get("path") or ""
    m = _FILE_ROUTE.match(path)
    if m and "/" in m.group(2):
        event["path"] = m.group(1) + quote(m.group(2), safe="")


@lambda_handler
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    body = event.get("body") or ""
    if len(body) > MAX_BODY_BYTES:
        exc = TooLarge(f"request body larger than {MAX_BODY_BYTES} bytes")
        return {
            "statusCode": 413,
            "headers": {"Content-Type": "application/json"},
            "body": json.dumps({"error": {"code": exc.code, "message": exc.message}}),
        }
    _encode_greedy_path(event)
    return app.resolve(event, context)
