"""`stepwise serve` over real HTTP on 127.0.0.1, as a frontend developer calls it."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.e2e.conftest import ROOT, free_port

pytestmark = pytest.mark.e2e

ALICE, BOB = "alice-token", "bob-token"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, float]]:
    port = free_port()
    script = tmp_path_factory.mktemp("serve") / "script.json"
    script.write_text('{"default_task": {"delay_ms": 0}}')
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STEPWISE_", "AI_PROVIDER", "TASK_"))}
    env.update(
        {
            "PYTHONPATH": str(ROOT),
            "STEPWISE_LOCAL_TOKENS": f"{ALICE}:alice,{BOB}:bob",
            "STEPWISE_MOCK_SCRIPT": str(script),
        }
    )
    started = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "local", "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    base = f"http://127.0.0.1:{port}"
    first_answer = None
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                httpx.get(f"{base}/openapi.json", timeout=1)
                first_answer = time.monotonic() - started
                break
            except httpx.TransportError:
                if proc.poll() is not None:
                    raise RuntimeError(proc.stderr.read() if proc.stderr else "serve exited") from None
                time.sleep(0.05)
        assert first_answer is not None, "stepwise serve never answered"
        yield base, first_answer
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _wait_done(base: str, build_id: str, token: str = ALICE) -> list[dict]:
    events: list[dict] = []
    after = 0
    for _ in range(600):
        page = httpx.get(f"{base}/builds/{build_id}/events", params={"after": after}, headers=_auth(token)).json()
        events += page["events"]
        if events:
            after = events[-1]["seq"]
        if events and events[-1]["type"] in ("build_completed", "build_failed", "build_cancelled"):
            return events
        time.sleep(0.05)
    raise AssertionError("build did not finish")


def test_prints_url_and_answers(server: tuple[str, float]) -> None:
    base, first = server
    doc = httpx.get(f"{base}/openapi.json").json()
    assert doc["openapi"].startswith("3.")
    paths = set(doc["paths"])
    for route in (
        "/builds",
        "/builds/{buildId}",
        "/builds/{buildId}/events",
        "/builds/{buildId}/approval",
        "/builds/{buildId}/cancel",
        "/builds/{buildId}/tasks/{taskId}/retry",
        "/builds/{buildId}/files",
        "/builds/{buildId}/files/{path}",
        "/openapi.json",
    ):
        assert route in paths, route
    print(f"first answer after {first:.2f}s")


def test_build_over_http_owner_scoping_and_files(server: tuple[str, float]) -> None:
    base, _ = server
    r = httpx.post(f"{base}/builds", json={"prompt": "Create a landing page with a hero section"}, headers=_auth(ALICE))
    assert r.status_code == 202
    body = r.json()
    build_id = body["buildId"]
    assert body["links"] == {"self": f"/builds/{build_id}", "events": f"/builds/{build_id}/events"}

    events = _wait_done(base, build_id)
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert events[-1]["data"]["status"] == "completed"

    view = httpx.get(f"{base}/builds/{build_id}", headers=_auth(ALICE)).json()
    assert view["status"] == "completed"
    assert all(t["status"] == "completed" for t in view["plan"]["tasks"])
    assert view["metrics"]["completedTasks"] == len(view["plan"]["tasks"])

    # another user's build answers exactly like a missing one
    other = httpx.get(f"{base}/builds/{build_id}", headers=_auth(BOB))
    missing = httpx.get(f"{base}/builds/bld_01AAAAAAAAAAAAAAAAAAAAAAAA", headers=_auth(BOB))
    assert other.status_code == missing.status_code == 404
    assert other.json() == missing.json() | {"error": other.json()["error"]}
    assert httpx.get(f"{base}/builds/{build_id}/events", headers=_auth(BOB)).status_code == 404
    assert build_id not in {b["buildId"] for b in httpx.get(f"{base}/builds", headers=_auth(BOB)).json()["builds"]}
    assert build_id in {b["buildId"] for b in httpx.get(f"{base}/builds", headers=_auth(ALICE)).json()["builds"]}

    files = httpx.get(f"{base}/builds/{build_id}/files", headers=_auth(ALICE)).json()
    nested = next(f for f in files if "/" in f["path"])
    content = httpx.get(f"{base}/builds/{build_id}/files/{nested['path']}", headers=_auth(ALICE))
    assert content.status_code == 200 and len(content.content) == nested["size"]
    assert httpx.get(f"{base}/builds/{build_id}/files/{nested['path']}", headers=_auth(BOB)).status_code == 404


def test_bad_requests_get_clear_4xx(server: tuple[str, float]) -> None:
    base, _ = server
    r = httpx.post(f"{base}/builds", content=b"{not json", headers=_auth(ALICE) | {"Content-Type": "application/json"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "malformed_json"
    r = httpx.post(f"{base}/builds", json={"prompt": "x", "maxConcurrency": 50}, headers=_auth(ALICE))
    assert r.status_code == 422
    assert [d["field"] for d in r.json()["error"]["details"]] == ["maxConcurrency"]
    r = httpx.post(f"{base}/builds", json={"prompt": ""}, headers=_auth(ALICE))
    assert r.status_code == 422 and "prompt" in r.json()["error"]["message"]
    r = httpx.post(
        f"{base}/builds", json={"prompt": "x", "webhookUrl": "http://169.254.169.254/latest"}, headers=_auth(ALICE)
    )
    assert r.status_code == 422 and r.json()["error"]["details"][0]["field"] == "webhookUrl"
    assert httpx.get(f"{base}/builds").status_code == 401
    assert httpx.get(f"{base}/builds", headers=_auth("wrong")).status_code == 401
