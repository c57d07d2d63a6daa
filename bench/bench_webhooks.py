"""Webhook delivery in the local runtime: throughput and event-recorded → receiver-got latency, with a
healthy receiver and with one failing 30% of attempts; delivered fraction after retries.

Baseline: the same receiver hit by plain sequential POSTs from one thread (no signing, no queue), in
the same run. The retry backoff base is 0 here so the figures measure the pipeline, not the schedule.
"""

from __future__ import annotations

import json
import random
import statistics
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

TASKS = 30
TARGET_P50_MS = 250.0


class _Receiver:
    def __init__(self, fail_rate: float, seed: int = 7) -> None:
        self.fail_rate = fail_rate
        self.rng = random.Random(seed)
        self.lock = threading.Lock()
        self.got: dict[str, float] = {}  # webhook-id -> first successful receipt (epoch s)
        self.attempts = 0
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with receiver.lock:
                    receiver.attempts += 1
                    fail = receiver.rng.random() < receiver.fail_rate
                    if not fail:
                        receiver.got.setdefault(self.headers.get("webhook-id", "?"), time.time())
                self.send_response(500 if fail else 204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def close(self) -> None:
        self.server.shutdown()


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * (len(ordered) - 1) + 0.5))] if ordered else float("nan")


def _raw_baseline(n: int = 200) -> tuple[float, list[float]]:
    import httpx

    rec = _Receiver(0.0)
    lat: list[float] = []
    try:
        with httpx.Client() as http:
            start = time.perf_counter()
            for i in range(n):
                t = time.perf_counter()
                http.post(rec.url, content=b"{}", headers={"webhook-id": f"b{i}"})
                lat.append((time.perf_counter() - t) * 1000)
            rate = n / (time.perf_counter() - start)
    finally:
        rec.close()
    return rate, lat


def _run_build(rt: Any, url: str) -> tuple[list[dict[str, Any]], dict[str, int]]:
    from shared.logic.webhooks import delivery_summary

    code, body = rt.invoke_api("POST", "/builds", user="dev", body={"prompt": "webhook bench", "webhookUrl": url})
    assert code == 202, body
    build_id = body["buildId"]
    deadline = time.monotonic() + 300
    events: list[dict[str, Any]] = []
    # Watched as a client watches a build: a long poll for the events after the last one seen (not
    # the whole log read again every few ms, which loaded the one process the build runs in).
    while time.monotonic() < deadline:
        after = events[-1]["seq"] if events else 0
        _, page = rt.invoke_api("GET", f"/builds/{build_id}/events", user="dev",
                                query={"after": str(after), "limit": "1000", "wait": "1"})
        events += page["events"]
        if events and events[-1]["type"] in ("build_completed", "build_failed"):
            break
    while time.monotonic() < deadline:
        counts = delivery_summary(build_id)
        if not counts.get("pending"):
            return events, counts
        time.sleep(0.1)
    return events, delivery_summary(build_id)


def _measure(rt: Any, fail_rate: float) -> dict[str, Any]:
    rec = _Receiver(fail_rate)
    try:
        events, counts = _run_build(rt, rec.url)
    finally:
        rec.close()
    lat = [(rec.got[e["id"]] * 1000 - e["timestamp"]) for e in events if e["id"] in rec.got]
    first = min(e["timestamp"] for e in events) / 1000
    last = max(rec.got.values()) if rec.got else first
    recorded_s = max(1e-9, max(e["timestamp"] for e in events) / 1000 - first)
    return {
        "recorded_per_s": len(events) / recorded_s,  # how fast the build wrote them
        "events": len(events),
        "delivered": counts.get("delivered", 0),
        "dead": counts.get("dead", 0),
        "attempts": rec.attempts,
        "lat": lat,
        "rate": len(rec.got) / max(1e-9, last - first),
    }


def run(quick: bool = False) -> list[dict[str, Any]]:
    from local.runtime import LocalRuntime
    from shared.signing import generate_secret

    tasks = [
        {
            "id": f"t{i}",
            "type": "create_file",
            "name": f"File {i}",
            "input": {"targetPath": f"f{i}.txt", "dependencies": [f"t{i - 1}"] if i % 3 else []},
        }
        for i in range(10 if quick else TASKS)
    ]
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "script.json"
        script.write_text(json.dumps({"plan": {"tasks": tasks}, "default_task": {"delay_ms": 0}}))
        env = {
            "STEPWISE_MOCK_SCRIPT": str(script),
            "WEBHOOK_SECRET": generate_secret(),
            "WEBHOOK_ALLOWED_HOSTS": "127.0.0.1",
            "WEBHOOK_BACKOFF_BASE_SECONDS": "0",
            "WEBHOOK_MAX_ATTEMPTS": "8",
        }
        base_rate, base_lat = _raw_baseline(100 if quick else 200)
        with LocalRuntime(env=env) as rt:
            healthy = _measure(rt, 0.0)
            flaky = _measure(rt, 0.3)
    b50 = statistics.median(base_lat)
    b99 = _pct(base_lat, 0.99)
    h50, h99 = _pct(healthy["lat"], 0.5), _pct(healthy["lat"], 0.99)
    f50, f99 = _pct(flaky["lat"], 0.5), _pct(flaky["lat"], 0.99)
    lost = flaky["events"] - flaky["delivered"] - flaky["dead"]
    return [
        {
            "figure": f"webhook throughput, healthy receiver ({healthy['events']} events); baseline plain sequential POSTs",
            "ours": round(healthy["rate"], 1),
            "baseline": round(base_rate, 1),
            "ratio": round(healthy["rate"] / base_rate, 3),
            "unit": "events/s",
            "target": None,
        },
        {
            "figure": (
                f"event recorded → receiver got, p50, healthy, while the {TASKS}-task build runs; baseline a plain "
                "POST round trip p50"
            ),
            "ours": round(h50, 1),
            "baseline": round(b50, 2),
            "ratio": round(h50 / b50, 1),
            "unit": "ms",
            "target": f"<= {TARGET_P50_MS:.0f}",
            "met": h50 <= TARGET_P50_MS,
            "note": None if h50 <= TARGET_P50_MS else (
                f"the build recorded {healthy['recorded_per_s']:.0f} events/s and one endpoint gets at most 20 "
                "deliveries/s (the per-endpoint rate limit): past the 20-event burst, events queue for the limit; "
                "the rest is the webhook workers sharing the build's one process and GIL"
            ),
        },
        {
            "figure": "event recorded → receiver got, p99, healthy; baseline plain POST p99",
            "ours": round(h99, 1),
            "baseline": round(b99, 2),
            "ratio": round(h99 / b99, 1),
            "unit": "ms",
            "target": None,
        },
        {
            "figure": "event recorded → receiver got, p50, receiver failing 30% of attempts; baseline healthy p50",
            "ours": round(f50, 1),
            "baseline": round(h50, 1),
            "ratio": round(f50 / h50, 2),
            "unit": "ms",
            "target": None,
        },
        {
            "figure": "event recorded → receiver got, p99, failing 30%; baseline healthy p99",
            "ours": round(f99, 1),
            "baseline": round(h99, 1),
            "ratio": round(f99 / h99, 2),
            "unit": "ms",
            "target": None,
        },
        {
            "figure": (
                f"delivered fraction after retries, failing 30% ({flaky['attempts']} attempts for "
                f"{flaky['events']} events; {flaky['dead']} dead-lettered, {lost} lost); baseline healthy"
            ),
            "ours": round(100.0 * flaky["delivered"] / max(1, flaky["events"]), 1),
            "baseline": round(100.0 * healthy["delivered"] / max(1, healthy["events"]), 1),
            "ratio": None,
            "unit": "%",
            "target": "= 100",
            "met": flaky["delivered"] == flaky["events"] and lost == 0,
        },
    ]


def details() -> str:
    return (
        "Start instant: the event's `timestamp`, stamped in the write attempt that commits it (just before the\n"
        "DynamoDB put/transaction). End instant: the receiver's `time.time()` when the POST arrived (first\n"
        "success per webhook-id). The build is zero-latency tasks, so the webhook worker competes with a\n"
        "CPU-bound build for the one process's GIL. Local delivery was seconds (p50 3.0 s) mostly because every\n"
        "delivery built a new TLS context (the CA bundle read and parsed: tens of ms of CPU), so the worker\n"
        "delivered fewer events per second than the build recorded; the context is now made once per process,\n"
        "and the local webhook poller hands one event per invocation (a batch of 5 was delivered one after\n"
        "another). The local runtime now lets a thread hold the GIL 1 ms instead of 5 before a waiting one\n"
        "takes it (a delivery waits on sockets several times). One endpoint gets at most 20 deliveries/s\n"
        "(the per-endpoint rate limit), so while a build records events faster than that, they queue for it.\n"
        "The failing rows include the retry\n"
        "backoff (base 0 s here, but SQS visibility is whole seconds)."
    )


if __name__ == "__main__":
    for row in run():
        print(row)
