"""Pushing frames to WebSocket connections through the API Gateway Management API."""

from __future__ import annotations

import threading
from typing import Any

from shared.dal.vendor_errors import error_code


class ConnectionGone(Exception):
    """The client has disconnected (PostToConnection answered 410 GoneException)."""


class ConnectionPoster:
    def __init__(self, endpoint_url: str) -> None:
        self.endpoint_url = endpoint_url
        self._client: Any = None
        self._lock = threading.Lock()

    def _api(self) -> Any:
        with self._lock:
            if self._client is None:
                import boto3
                from botocore.config import Config

                self._client = boto3.session.Session().client(
                    "apigatewaymanagementapi",
                    endpoint_url=self.endpoint_url,
                    config=Config(retries={"mode": "standard", "max_attempts": 3}, max_pool_connections=32),
                )
            return self._client

    def post(self, connection_id: str, text: str) -> None:
        try:
            self._api().post_to_connection(ConnectionId=connection_id, Data=text.encode("utf-8"))
        except Exception as exc:
            if error_code(exc) in ("GoneException", "410"):
                raise ConnectionGone(connection_id) from None
            raise
