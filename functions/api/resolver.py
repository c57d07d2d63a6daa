"""The REST resolver, with the request it is answering kept per thread.

Powertools keeps the current event, Lambda context and route context on the resolver (the event on
its base class). On Lambda one container answers one request at a time, so that is safe; but
`stepwise serve` answers many requests at once through this one handler, each on its own thread
(a long-poll holds one for up to 20 s), and two requests must never see each other's caller.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

from aws_lambda_powertools.event_handler import APIGatewayRestResolver


class PerThreadRestResolver(APIGatewayRestResolver):
    _request = threading.local()

    @property  # type: ignore[override]
    def current_event(self) -> Any:
        return self._request.event

    @current_event.setter
    def current_event(self, value: Any) -> None:
        self._request.event = value

    @property  # type: ignore[override]
    def lambda_context(self) -> Any:
        return getattr(self._request, "lambda_context", None)

    @lambda_context.setter
    def lambda_context(self, value: Any) -> None:
        self._request.lambda_context = value

    @property  # type: ignore[override]
    def context(self) -> dict[str, Any]:
        ctx = getattr(self._request, "context", None)
        if ctx is None:
            ctx = self._request.context = {}
        return ctx  # type: ignore[no-any-return]

    @context.setter
    def context(self, value: dict[str, Any]) -> None:
        self._request.context = value

    def _to_proxy_event(self, event: dict[str, Any]) -> Any:
        proxy = super()._to_proxy_event(event)
        self._request.event = proxy  # resolve() stores it on the shared base class too; reads come here
        return proxy

    def resolve(self, event: Mapping[str, Any], context: Any) -> dict[str, Any]:
        self._request.lambda_context = context
        return super().resolve(event, context)
