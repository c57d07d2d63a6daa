"""Which origins get CORS headers (STEPWISE_CORS_ORIGINS)."""

from __future__ import annotations

import pytest

from shared import cors
from shared.settings import Settings


def test_any_origin_by_default() -> None:
    headers = cors.headers_for("http://localhost:5173", "*")
    assert headers["Access-Control-Allow-Origin"] == "*"
    assert "Authorization" in headers["Access-Control-Allow-Headers"]
    assert "Vary" not in headers
    assert cors.headers_for(None, "*") == {}  # not a browser: nothing to say


def test_only_listed_origins_are_named_and_the_answer_varies_by_origin() -> None:
    origins = "https://app.example.com,http://localhost:5173"
    assert cors.headers_for("https://evil.example", origins) == {}
    for origin in origins.split(","):
        headers = cors.headers_for(origin, origins)
        assert headers["Access-Control-Allow-Origin"] == origin and headers["Vary"] == "Origin"
    preflight = cors.preflight_headers("https://app.example.com", origins, ["GET", "POST"])
    assert preflight["Access-Control-Allow-Methods"] == "GET,OPTIONS,POST"


def test_origins_setting_is_validated_and_normalised() -> None:
    assert Settings.model_validate({"STEPWISE_CORS_ORIGINS": " https://a.example/ , http://b:3000"}).cors_origin_list == [
        "https://a.example",
        "http://b:3000",
    ]
    with pytest.raises(ValueError, match="origins"):
        Settings.model_validate({"STEPWISE_CORS_ORIGINS": "a.example"})
