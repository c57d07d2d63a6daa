"""Live events over WebSocket on a real `stepwise serve`, as a page uses them: subscribe mid-build,
get the recorded events then the live ones in order, reconnect with `after` and lose nothing."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.serving import serving

pytestmark = pytest.mark.e2e
websockets_sync = pytest.importorskip("websockets.sync.client")
from websockets.exceptions import ConnectionClosed  # noqa: E402

ALICE, BOB = "alice-token", "bob-token"
TERMINAL = {"build_completed", "build_failed", "build_cancelled"}
TASKS = 10


def _script() -> dict[str, Any]:
    """A chain of tasks, each taking a while: the build is still running when a client joins."""
    tasks = [
        {
            "id": f"t{i}",
            "type": "create_file",
            "name": f"File {i}",
            "description": f"Write file {i}",
            "input": {"targetPath": f"src/f{i}.txt", "dependencies": [f"t{i - 1}"] if i else []},
        }
        for i in range(TASKS)
    ]
    return {"plan": {"tasks": tasks, "chunk_chars": 200, "chunk_delay_ms": 5}, "default_task": {"delay_ms": 300}}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with serving(tmp_path_factory.mktemp("ws"), tokens={ALICE: "alice", BOB: "bob"}, script=_script()) as serve:
        yield serve.base


def _ws(base: str, token: str) -> Any:
    return websockets_sync.connect(f"{base.replace('http', 'ws', 1)}/ws?token={token}", open_timeout=30)


def _send(ws: Any, **frame: Any) -> None:
    ws.send(json.dumps(frame))


def _recv(ws: Any) -> dict[str, Any]:
    return json.loads(ws.recv(timeout=60))


def _start_build(base: str) -> str:
    r = httpx.post(f"{base}/builds", json={"prompt": "live page"}, headers={"Authorization": f"Bearer {ALICE}"})
    assert r.status_code == 202, r.text
    return str(r.json()["buildId"])


def _log(base: str, build_id: str) -> list[dict[str, Any]]:
    page = httpx.get(
        f"{base}/builds/{build_id}/events", params={"limit": 1000}, headers={"Authorization": f"Bearer {ALICE}"}
    )
    return list(page.json()["events"])


def _wait_for(base: str, build_id: str, event_type: str) -> None:
    for _ in range(1200):
        if any(e["type"] == event_type for e in _log(base, build_id)):
            return
        time.sleep(0.05)
    raise AssertionError(f"{event_type} never recorded")


def test_subscribe_mid_build_then_reconnect_misses_nothing_and_repeats_nothing(server: str) -> None:
    build_id = _start_build(server)
    _wait_for(server, build_id, "task_completed")  # the build is under way when the page opens

    received: list[dict[str, Any]] = []
    with _ws(server, ALICE) as ws:
        _send(ws, action="subscribe", buildId=build_id, after=0)
        first = _recv(ws)
        assert first["type"] == "subscribed" and first["buildId"] == build_id
        recorded_before = first["lastSeq"]
        assert recorded_before >= 1
        # Replay, then at least two events recorded after the subscription, then drop the connection.
        while not received or received[-1]["seq"] < recorded_before + 2:
            frame = _recv(ws)
            assert frame["type"] not in TERMINAL, "the build ended before the client could reconnect"
            received.append(frame)
    highest = received[-1]["seq"]
    for _ in range(2400):  # let the build move on while the client is away
        if _log(server, build_id)[-1]["seq"] > highest:
            break
        time.sleep(0.05)

    with _ws(server, ALICE) as ws:
        _send(ws, action="subscribe", buildId=build_id, after=highest)
        again = _recv(ws)
        assert again["type"] == "subscribed"
        assert again["lastSeq"] > highest  # events were recorded while the client was away
        while received[-1]["type"] not in TERMINAL:
            received.append(_recv(ws))

    seqs = [e["seq"] for e in received]
    assert seqs == list(range(1, len(seqs) + 1)), "gap, duplicate or disorder across the reconnect"
    log = _log(server, build_id)
    assert [e["id"] for e in received] == [e["id"] for e in log]
    assert received == log  # the same envelopes as GET /events, field for field
    assert received[-1]["type"] == "build_completed"
    assert sum(e["type"] == "task_completed" for e in received) == TASKS


def test_resubscribe_on_one_connection_restarts_from_after(server: str) -> None:
    build_id = _start_build(server)
    _wait_for(server, build_id, "plan_generated")
    with _ws(server, ALICE) as ws:
        _send(ws, action="subscribe", buildId=build_id, after=0)
        assert _recv(ws)["type"] == "subscribed"
        assert _recv(ws)["seq"] == 1
        _send(ws, action="subscribe", buildId=build_id, after=3)  # replaces the first subscription
        frames = []
        while not frames or frames[-1].get("type") != "subscribed":
            frames.append(_recv(ws))
        nxt = _recv(ws)
        assert nxt["seq"] == 4
        _send(ws, action="unsubscribe", buildId=build_id)
        while (frame := _recv(ws))["type"] != "unsubscribed":
            assert frame["buildId"] == build_id
        _send(ws, action="ping")
        assert _recv(ws) == {"type": "pong"}  # nothing of the build after the unsubscribe


def test_another_users_build_is_not_found_exactly_like_a_missing_one(server: str) -> None:
    build_id = _start_build(server)
    missing = "bld_01AAAAAAAAAAAAAAAAAAAAAAAA"
    with _ws(server, BOB) as ws:
        _send(ws, action="subscribe", buildId=build_id, after=0)
        other = _recv(ws)
        _send(ws, action="subscribe", buildId=missing, after=0)
        absent = _recv(ws)
        _send(ws, action="ping")
        assert _recv(ws) == {"type": "pong"}  # and nothing of Alice's build leaked in between
    assert other == {"type": "error", "code": "not_found", "buildId": build_id}
    assert absent == {**other, "buildId": missing}


@pytest.mark.parametrize("query", ["?token=wrong", "", "?token="])
def test_bad_or_missing_token_is_closed_with_4401(server: str, query: str) -> None:
    url = f"{server.replace('http', 'ws', 1)}/ws{query}"
    with websockets_sync.connect(url, open_timeout=30) as ws, pytest.raises(ConnectionClosed) as closed:
        ws.recv(timeout=30)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4401


def test_malformed_frames_get_a_clear_error_and_the_connection_stays(server: str) -> None:
    with _ws(server, ALICE) as ws:
        ws.send("{not json")
        assert _recv(ws)["code"] == "invalid_request"
        _send(ws, action="subscribe", buildId=7)
        bad = _recv(ws)
        assert bad["code"] == "invalid_request" and [d["field"] for d in bad["details"]] == ["buildId"]
        _send(ws, action="dance")
        assert _recv(ws)["details"][0]["field"] == "action"
        _send(ws, action="subscribe", buildId="bld_x", after=-1)
        assert [d["field"] for d in _recv(ws)["details"]] == ["after"]
        _send(ws, action="ping")
        assert _recv(ws) == {"type": "pong"}
