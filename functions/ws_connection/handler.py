"""WebSocket routes: `$connect` (after the authorizer), `$default` (subscribe, unsubscribe, ping) and
`$disconnect`. Answers go to the client with PostToConnection, in order with the events they precede."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from shared.logic import live_delivery as live
from shared.observability import lambda_handler

OK = {"statusCode": 200}


def _owner(request: dict[str, Any]) -> str | None:
    authorizer = request.get("authorizer") or {}
    owner = authorizer.get("principalId") or authorizer.get("sub")
    return str(owner) if owner else None


@lambda_handler
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    request = event["requestContext"]
    route, connection_id = request["routeKey"], request["connectionId"]
    if route == "$connect":
        owner = _owner(request)
        if not owner:
            return {"statusCode": 401}
        live.connect(connection_id, owner)
    elif route == "$disconnect":
        live.disconnect(connection_id)
    else:
        live.receive(
            connection_id, _owner(request), event.get("body") or "", time_left_ms=context.get_remaining_time_in_millis()
        )
    return OK
