"""Live events, measured from one 30-task build on a real `stepwise serve` (a subprocess, as a user
runs it): event recorded → received, for a WebSocket client, for a client polling
`GET /builds/{id}/events` every second, and for webhook delivery, all three in the same run.

Start instant: the event's own `timestamp` (epoch ms), which `EventLog.record_many` stamps on the
event in the write attempt that commits it, immediately before the DynamoDB put/transaction — so it
is when the event was recorded, not a task's start or a queue message's time copied into it. End
instant: `time.time()` in this process when the frame / the page / the webhook POST arrived. Both
clocks are this machine's. WebSocket figures count only events pushed live (seq above the
`subscribed` frame's lastSeq); the poller and the webhook receiver count every event.
"""

from __future__ import annotations

import json
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
TOKEN = "bench-token"
TERMINAL = {"build_completed", "build_failed", "build_cancelled"}
TASKS = 30
TASK_DELAY_MS = 150
POLL_EVERY_S = 1.0


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * (len(ordered) - 1) + 0.5))] if ordered else float("nan")


def _script(tasks: int) -> dict[str, Any]:
    """Chains of three (t0 → t1 → t2, t3 → t4 → t5, …): parallel branches, each task taking a while."""
    plan = [
        {
            "id": f"t{i}",
            "type": "create_file",
            "name": f"File {i}",
            "description": f"Write file {i}",
            "input": {"targetPath": f"src/f{i}.txt", "dependencies": [f"t{i - 1}"] if i % 3 else []},
        }
        for i in range(tasks)
    ]
    return {"plan": {"tasks": plan}, "default_task": {"delay_ms": TASK_DELAY_MS}}


class _Receiver:
    """Webhook receiver: first receipt time per event id."""

    def __init__(self) -> None:
        self.got: dict[str, float] = {}
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                now = time.time()
                with receiver.lock:
                    receiver.got.setdefault(self.headers.get("webhook-id", "?"), now)
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"


def _measure(base: str, hook_url: str, receiver: _Receiver, tasks: int) -> dict[str, Any]:
    import httpx
    from websockets.sync.client import connect

    headers = {"Authorization": f"Bearer {TOKEN}"}
    ws_got: dict[int, float] = {}
    live_from: list[int] = []
    poll_got: dict[int, float] = {}
    done = threading.Event()
    build: dict[str, str] = {}

    ws = connect(f"{base.replace('http', 'ws', 1)}/ws?token={TOKEN}", open_timeout=60)
    try:
        resp = httpx.post(f"{base}/builds", json={"prompt": "live bench", "webhookUrl": hook_url}, headers=headers)
        resp.raise_for_status()
        build_id = build["id"] = resp.json()["buildId"]
        ws.send(json.dumps({"action": "subscribe", "buildId": build_id, "after": 0}))

        def poll() -> None:  # on a fixed 1 s schedule (a slow answer does not push the next tick back)
            after = 0
            tick = time.monotonic()
            with httpx.Client(headers=headers, timeout=30) as http:
                while True:
                    page = http.get(f"{base}/builds/{build_id}/events", params={"after": after, "limit": 1000}).json()
                    now = time.time()
                    for e in page["events"]:
                        poll_got.setdefault(e["seq"], now)
                        after = max(after, e["seq"])
                    if done.is_set() and not page["events"]:
                        return
                    tick += POLL_EVERY_S
                    time.sleep(max(0.0, tick - time.monotonic()))

        poller = threading.Thread(target=poll, daemon=True)
        poller.start()
        timestamps: dict[int, dict[str, Any]] = {}
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            frame = json.loads(ws.recv(timeout=120))
            now = time.time()
            if frame.get("type") == "subscribed":
                live_from.append(int(frame["lastSeq"]))
                continue
            if "seq" not in frame or "timestamp" not in frame:
                raise RuntimeError(f"unexpected frame {frame}")
            ws_got.setdefault(frame["seq"], now)
            timestamps[frame["seq"]] = frame
            if frame["type"] in TERMINAL:
                break
        done.set()
        poller.join(timeout=60)
    finally:
        ws.close()
    # the webhook queue drains after the build; wait for every event (or give up after a minute)
    wait_until = time.monotonic() + 60
    while time.monotonic() < wait_until:
        with receiver.lock:
            if all(e["id"] in receiver.got for e in timestamps.values()):
                break
        time.sleep(0.1)
    live = live_from[0] if live_from else 0
    ws_lat = [(ws_got[s] * 1000 - e["timestamp"]) for s, e in timestamps.items() if s > live]
    poll_lat = [(poll_got[s] * 1000 - e["timestamp"]) for s, e in timestamps.items() if s in poll_got]
    with receiver.lock:
        hook_lat = [
            (receiver.got[e["id"]] * 1000 - e["timestamp"]) for e in timestamps.values() if e["id"] in receiver.got
        ]
    seqs = sorted(ws_got)
    return {
        "events": len(timestamps),
        "in_order": seqs == list(range(1, len(seqs) + 1)),
        "live": len(ws_lat),
        "ws": ws_lat,
        "poll": poll_lat,
        "hook": hook_lat,
        "span_s": (max(e["timestamp"] for e in timestamps.values()) - min(e["timestamp"] for e in timestamps.values()))
        / 1000,
    }


def run(quick: bool = False) -> list[dict[str, Any]]:
    from shared.signing import generate_secret
    from tests.serving import serving

    tasks = 10 if quick else TASKS
    receiver = _Receiver()
    try:
        with (
            tempfile.TemporaryDirectory() as tmp,
            serving(
                Path(tmp),
                tokens={TOKEN: "bench"},
                script=_script(tasks),
                env={"WEBHOOK_ALLOWED_HOSTS": "127.0.0.1", "WEBHOOK_SECRET": generate_secret()},
                timeout=120,
            ) as serve,
        ):
            m = _measure(serve.base, receiver.url, receiver, tasks)
    finally:
        receiver.server.shutdown()
    w50, w99 = _pct(m["ws"], 0.5), _pct(m["ws"], 0.99)
    p50, p99 = _pct(m["poll"], 0.5), _pct(m["poll"], 0.99)
    h50, h99 = _pct(m["hook"], 0.5), _pct(m["hook"], 0.99)
    size = f"{tasks}-task build, {m['events']} events over {m['span_s']:.1f} s; WebSocket: {m['live']} pushed live"
    return [
        {
            "figure": f"event recorded → WebSocket client received, p50 ({size}); baseline a client polling /events every 1 s",
            "ours": round(w50, 1),
            "baseline": round(p50, 1),
            "ratio": round(w50 / p50, 3) if p50 else None,
            "unit": "ms",
            "target": 250,
        },
        {
            "figure": "event recorded → WebSocket client received, p99; baseline polling every 1 s, p99",
            "ours": round(w99, 1),
            "baseline": round(p99, 1),
            "ratio": round(w99 / p99, 3) if p99 else None,
            "unit": "ms",
            "target": None,
        },
        {
            "figure": f"event recorded → webhook receiver got, p50, same build ({len(m['hook'])} delivered); baseline WebSocket p50",
            "ours": round(h50, 1),
            "baseline": round(w50, 1),
            "ratio": round(h50 / w50, 2) if w50 else None,
            "unit": "ms",
            "target": "<= 250",
            "met": h50 <= 250,
            "note": None if h50 <= 250 else (
                "the webhook worker shares the server's one process and GIL with the build: a delivery's own CPU "
                "(signing, the SSRF check, the delivery mark through moto) waits behind the task workers'; the "
                "webhook poller in a process of its own would close it"
            ),
        },
        {
            "figure": "event recorded → webhook receiver got, p99, same build; baseline WebSocket p99",
            "ours": round(h99, 1),
            "baseline": round(w99, 1),
            "ratio": round(h99 / w99, 2) if w99 else None,
            "unit": "ms",
            "target": None,
        },
        {
            "figure": "WebSocket client got every event once, in seq order (replay + live)",
            "ours": "yes" if m["in_order"] else "no",
            "baseline": None,
            "ratio": None,
            "unit": "",
            "target": "yes",
            "met": m["in_order"],
        },
    ]


def details() -> str:
    return (
        "The WebSocket path: the stream relay (which also feeds the webhook queue) hands each batch of\n"
        "events-table stream records to the live feed, which pushes the envelope to subscribed sockets;\n"
        "a poller sees an event on its next 1 s tick (about half a second late on average); a webhook goes\n"
        "stream → SQS → webhook worker → signed POST, sharing the server's one process with the build."
    )


if __name__ == "__main__":
    for row in run():
        print(row)
