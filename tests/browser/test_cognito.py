"""Signing in to the dashboard through a Cognito user pool's hosted UI (authorization code with PKCE),
as the deployed app does, against a real `stepwise serve` that accepts that pool's JWTs
(COGNITO_*) and a fake authorization server speaking Cognito's wire format
(tests/browser/fake_cognito.py): the page sends the person to sign in, comes back with a code,
exchanges it with its verifier, and lists that person's builds, not another user's."""

from __future__ import annotations

import re
from collections.abc import Iterator

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from playwright.sync_api import Page, expect

from tests.browser.fake_cognito import CLIENT_ID, FakeCognito
from tests.serving import Serve, free_port, serving

pytestmark = [pytest.mark.browser, pytest.mark.xdist_group("browser")]

DEV_TOKEN = "cognito-test-dev-token"


@pytest.fixture(scope="module")
def pool_and_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[FakeCognito, Serve]]:
    port = free_port()  # the dashboard's address is the pool client's callback, known before it starts
    with FakeCognito(callbacks=[f"http://127.0.0.1:{port}/"]) as pool:
        env = {
            "COGNITO_ISSUER": pool.issuer,
            "COGNITO_CLIENT_ID": CLIENT_ID,
            "COGNITO_DOMAIN": pool.domain,
        }
        script = {"default_task": {"delay_ms": 0}}
        with serving(
            tmp_path_factory.mktemp("cognito"), tokens={DEV_TOKEN: "dev"}, script=script, env=env, port=port
        ) as serve:
            yield pool, serve


def _start(serve: Serve, token: str, prompt: str) -> str:
    answer = httpx.post(f"{serve.base}/builds", json={"prompt": prompt}, headers={"Authorization": f"Bearer {token}"})
    assert answer.status_code == 202, answer.text
    return str(answer.json()["buildId"])


def test_the_api_takes_the_pools_tokens_as_the_aws_authorizer_does(pool_and_server: tuple[FakeCognito, Serve]) -> None:
    pool, serve = pool_and_server
    mine = pool.id_token("ana")
    build_id = _start(serve, mine, "Ana's first build")
    listed = httpx.get(f"{serve.base}/builds", headers={"Authorization": f"Bearer {mine}"}).json()["builds"]
    assert build_id in [b["buildId"] for b in listed]
    other = pool.id_token("bruno")  # the owner is the token's `sub`: Bruno does not see Ana's build
    assert httpx.get(f"{serve.base}/builds/{build_id}", headers={"Authorization": f"Bearer {other}"}).status_code == 404
    forged = pool.id_token("ana", key=rsa.generate_private_key(public_exponent=65537, key_size=2048))
    wrong_client = pool.id_token("ana", client_id="another-app-client")
    for token in (forged, wrong_client, mine[:-4] + "AAAA"):
        answer = httpx.get(f"{serve.base}/builds", headers={"Authorization": f"Bearer {token}"})
        assert answer.status_code == 401, answer.text


def test_sign_in_through_the_hosted_ui_then_list_the_callers_builds(
    page: Page, pool_and_server: tuple[FakeCognito, Serve]
) -> None:
    pool, serve = pool_and_server
    ana_build = _start(serve, pool.id_token("ana"), "A build Ana started")
    _start(serve, DEV_TOKEN, "Somebody else's build")

    # The app's own address for Ana's build: not signed in yet, so the sign-in page.
    page.goto(f"{serve.base}/#/builds/{ana_build}")
    expect(page.get_by_text("You will be sent to the sign-in page")).to_be_visible()
    page.get_by_role("button", name="Sign in").click()

    # Cognito's hosted UI: the request is the code flow with an S256 challenge.
    expect(page).to_have_url(re.compile(re.escape(f"{pool.domain}/oauth2/authorize?")))
    query = page.url.split("?", 1)[1]
    assert "response_type=code" in query and "code_challenge_method=S256" in query
    page.get_by_label("Username").fill("ana")
    page.get_by_label("Password").fill("correct horse battery staple")
    page.get_by_role("button", name="Sign in").click()

    # Back on the dashboard: the code was exchanged (with the verifier of that challenge) and the
    # page Ana asked for is shown; the code is gone from the address.
    expect(page.get_by_role("heading", name="A build Ana started")).to_be_visible()
    expect(page.get_by_text("signed in as ana@example.com")).to_be_visible()
    assert pool.exchanged == [{"username": "ana", "client_id": CLIENT_ID}], pool.refused
    assert "code=" not in page.url and page.url.endswith(f"#/builds/{ana_build}")

    page.get_by_role("navigation", name="Main").get_by_role("link", name="Builds").click()
    rows = page.locator("table tbody tr")
    expect(rows.filter(has_text="A build Ana started")).to_have_count(1)
    expect(page.get_by_text("Somebody else's build")).to_have_count(0)
