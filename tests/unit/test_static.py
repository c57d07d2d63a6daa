"""`stepwise serve` serves the dashboard's built files at / and leaves every API path alone."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from local.cli import dashboard_url
from local.static import static_answer


@pytest.fixture
def dist(tmp_path: Path) -> Path:
    (tmp_path / "assets").mkdir()
    (tmp_path / "index.html").write_text("<!doctype html><title>Stepwise</title>")
    (tmp_path / "assets" / "index-abc.js").write_text("console.log(1)")
    (tmp_path.parent / "secret.txt").write_text("nope")
    return tmp_path


def test_index_and_assets_with_security_headers(dist: Path) -> None:
    status, headers, body = static_answer("GET", "/", dist)  # type: ignore[misc]
    assert (status, body) == (200, b"<!doctype html><title>Stepwise</title>")
    assert headers["Cache-Control"] == "no-cache"
    assert "script-src 'self'" in headers["Content-Security-Policy"]
    assert "frame-ancestors 'none'" in headers["Content-Security-Policy"]
    assert headers["Referrer-Policy"] == "no-referrer"
    status, headers, body = static_answer("GET", "/assets/index-abc.js", dist)  # type: ignore[misc]
    assert status == 200 and body == b"console.log(1)"
    assert headers["Content-Type"].startswith(("text/javascript", "application/javascript"))
    assert "immutable" in headers["Cache-Control"]


def test_api_paths_and_other_methods_are_not_static(dist: Path) -> None:
    for path in ("/builds", "/builds/bld_1/files/index.html", "/openapi.json", "/ws", "/docs"):
        assert static_answer("GET", path, dist) is None
    assert static_answer("POST", "/", dist) is None


def test_no_file_outside_the_build_output(dist: Path) -> None:
    status, _, _ = static_answer("GET", "/assets/../../secret.txt", dist)  # type: ignore[misc]
    assert status == 404
    assert static_answer("GET", "/assets/missing.js", dist)[0] == 404  # type: ignore[index]


def test_config_points_the_app_at_this_origin_with_a_token(dist: Path) -> None:
    status, headers, body = static_answer("GET", "/config.json", dist)  # type: ignore[misc]
    assert status == 200 and headers["Content-Type"] == "application/json"
    assert json.loads(body) == {"apiUrl": "", "wsUrl": "/ws", "auth": {"kind": "token"}}


def test_an_unbuilt_dashboard_says_how_to_build_it(tmp_path: Path) -> None:
    status, _, body = static_answer("GET", "/", tmp_path / "nothing")  # type: ignore[misc]
    assert status == 200 and b"scripts/serve.sh" in body and b"npm --prefix web ci" in body


def test_dashboard_url_carries_the_token() -> None:
    assert dashboard_url("127.0.0.1", 8000, "dev-token") == "http://127.0.0.1:8000/?token=dev-token"
    assert dashboard_url("0.0.0.0", 9, "a b&c") == "http://127.0.0.1:9/?token=a%20b%26c"


def test_with_a_user_pool_the_app_signs_in_through_it(dist: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from local.auth import user_for
    from shared.settings import reset_settings

    issuer, domain = (
        "https://cognito-idp.eu-west-1.amazonaws.com/eu-west-1_Abc",
        "https://me.auth.eu-west-1.amazoncognito.com",
    )
    monkeypatch.setenv("COGNITO_ISSUER", issuer)
    monkeypatch.setenv("COGNITO_CLIENT_ID", "client1")
    monkeypatch.setenv("COGNITO_DOMAIN", domain)
    monkeypatch.setenv("STEPWISE_LOCAL_TOKENS", "dev-token:dev")
    reset_settings()
    try:
        _, _, body = static_answer("GET", "/config.json", dist)  # type: ignore[misc]
        auth = json.loads(body)["auth"]
        assert auth == {"kind": "cognito", "authority": issuer, "clientId": "client1", "domain": domain}
        _, headers, _ = static_answer("GET", "/", dist)  # type: ignore[misc]
        connect = next(d for d in headers["Content-Security-Policy"].split("; ") if d.startswith("connect-src"))
        assert connect == "connect-src 'self' https://cognito-idp.eu-west-1.amazonaws.com " + domain
        # The dev tokens still work; what is not a token of the pool (or not a JWT at all) is nobody.
        assert user_for("dev-token") == "dev"
        assert user_for("not-a-jwt") is None
        assert user_for("") is None
    finally:
        reset_settings()
