"""`stepwise build` end to end, as a user runs it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from standardwebhooks import Webhook

from tests.e2e.conftest import events_of, run_stepwise

pytestmark = pytest.mark.e2e

LANDING = "Create a landing page with a hero section"


def _by_type(events: list[dict], kind: str) -> list[dict]:
    return [e for e in events if e["type"] == kind]


def test_landing_page_build_streams_plan_runs_dag_and_writes_files(tmp_path: Path) -> None:
    out = tmp_path / "site"
    result = run_stepwise(["build", LANDING, "--out", str(out), "--json"])
    assert result.returncode == 0, result.stderr[-2000:]
    events = events_of(result.stdout)  # stdout carries only envelopes

    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert len({e["id"] for e in events}) == len(events)
    assert all(e["id"].startswith("evt_") for e in events)
    assert events[0]["type"] == "build_started"
    assert events[-1]["type"] == "build_completed" and events[-1]["data"]["status"] == "completed"

    partials = _by_type(events, "plan_partial")
    generated = _by_type(events, "plan_generated")
    assert partials and len(generated) == 1
    assert partials[0]["seq"] < generated[0]["seq"]  # tasks are shown before the plan is complete
    tasks = generated[0]["data"]["tasks"]
    assert 5 <= len(tasks) <= 8
    assert any(t["dependsOn"] for t in tasks)

    started = {e["data"]["taskId"]: e["seq"] for e in _by_type(events, "task_started")}
    completed = {e["data"]["taskId"]: e for e in _by_type(events, "task_completed")}
    assert set(started) == set(completed) == {t["id"] for t in tasks}
    for t in tasks:  # no task starts before its parents complete
        for parent in t["dependsOn"]:
            assert completed[parent]["seq"] < started[t["id"]], f"{t['id']} started before {parent}"

    written = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    expected = sorted(f for e in completed.values() for f in e["data"]["files"])
    assert written == sorted(set(expected))
    assert json.loads((out / "package.json").read_text())["name"]
    hero = next(p for p in out.rglob("Hero.*"))
    assert "export default function Hero" in hero.read_text()
    assert events[-1]["data"]["files"] == sorted(set(expected))


def test_human_output_shows_plan_progress_and_summary(tmp_path: Path, script_file) -> None:
    script = script_file({"default_task": {"delay_ms": 0}})
    result = run_stepwise(["build", LANDING, "--out", str(tmp_path / "o"), "--mock-script", str(script)])
    assert result.returncode == 0, result.stderr[-2000:]
    text = result.stdout
    assert "Planning" in text and "Plan: " in text
    assert "completed" in text and "files" in text and "tokens" in text and "cost" in text


@pytest.mark.parametrize("backends", [None, "inline"], ids=["moto-default-own-process", "moto-inline"])
def test_scripted_files_are_written_verbatim(tmp_path: Path, script_file, backends: str | None) -> None:
    """The same build with moto in its own process (the default) and in the runtime's process."""
    script = script_file(
        {
            "plan": {
                "tasks": [
                    {"id": "a", "type": "create_file", "name": "Readme", "input": {"targetPath": "README.md"}},
                    {
                        "id": "b",
                        "type": "create_file",
                        "name": "Index",
                        "input": {"targetPath": "web/index.html", "dependencies": ["a"]},
                    },
                ]
            },
            "tasks": {
                "a": {"files": [{"path": "README.md", "content": "# Hello\n"}]},
                "b": {
                    "files": [{"path": "web/index.html", "content": "<h1>hi</h1>\n"}],
                    "usage": {"promptTokens": 11, "completionTokens": 7},
                },
            },
        }
    )
    out = tmp_path / "o"
    where = ["--backends", backends] if backends else []
    result = run_stepwise(["build", "two files", "--out", str(out), "--mock-script", str(script), "--json", *where])
    assert result.returncode == 0, result.stderr[-2000:]
    assert (out / "README.md").read_text() == "# Hello\n"
    assert (out / "web/index.html").read_text() == "<h1>hi</h1>\n"
    done = [e for e in events_of(result.stdout) if e["type"] == "task_completed" and e["data"]["taskId"] == "b"]
    assert done[0]["data"]["usage"]["promptTokens"] == 11


def test_a_task_that_keeps_failing_skips_its_dependents_and_exits_1(tmp_path: Path, script_file) -> None:
    script = script_file(
        {
            "plan": {
                "tasks": [
                    {"id": "base", "type": "create_file", "name": "Base", "input": {"targetPath": "base.txt"}},
                    {
                        "id": "child",
                        "type": "create_file",
                        "name": "Child",
                        "input": {"targetPath": "child.txt", "dependencies": ["base"]},
                    },
                    {"id": "other", "type": "create_file", "name": "Other", "input": {"targetPath": "other.txt"}},
                ]
            },
            "tasks": {"base": {"fail_attempts": 5}},
            "default_task": {"delay_ms": 0},
        }
    )
    result = run_stepwise(
        ["build", "x", "--out", str(tmp_path / "o"), "--mock-script", str(script), "--json"],
        env={"TASK_MAX_ATTEMPTS": "2", "TASK_RETRY_BASE_SECONDS": "0"},
    )
    assert result.returncode == 1
    events = events_of(result.stdout)
    failed = [e["data"] for e in events if e["type"] == "task_failed"]
    assert [(f["taskId"], f["attempt"], f["willRetry"]) for f in failed] == [("base", 1, True), ("base", 2, False)]
    assert [e["data"] for e in events if e["type"] == "task_skipped"] == [
        {"taskId": "child", "reason": "dependency_failed", "dependency": "base"}
    ]
    assert any(e["type"] == "task_completed" and e["data"]["taskId"] == "other" for e in events)
    assert events[-1]["data"]["status"] == "completed_with_errors"


def test_bad_usage_exits_2(tmp_path: Path) -> None:
    result = run_stepwise(["build", LANDING, "--provider", "nope"])
    assert result.returncode == 2
    assert "--provider" in result.stderr
    result = run_stepwise(["build", LANDING, "--backends", "nowhere", "--out", str(tmp_path)])
    assert result.returncode == 2
    assert "backends" in result.stderr and "inline" in result.stderr


def test_invalid_configuration_names_the_variable(tmp_path: Path) -> None:
    result = run_stepwise(["build", LANDING, "--out", str(tmp_path)], env={"TASK_MAX_ATTEMPTS": "zero"})
    assert result.returncode == 2
    assert "TASK_MAX_ATTEMPTS" in result.stderr


def test_webhooks_are_signed_and_all_delivered_before_exit(tmp_path: Path, script_file, httpserver) -> None:
    from shared.signing import generate_secret

    secret = generate_secret()
    received: list[tuple[bytes, dict[str, str]]] = []

    def hook(request):  # type: ignore[no-untyped-def]
        from werkzeug import Response

        received.append((request.get_data(), dict(request.headers)))
        return Response(status=204)

    httpserver.expect_request("/hook", method="POST").respond_with_handler(hook)
    script = script_file({"default_task": {"delay_ms": 0}})
    result = run_stepwise(
        [
            "build",
            LANDING,
            "--out",
            str(tmp_path / "o"),
            "--mock-script",
            str(script),
            "--json",
            "--webhook",
            httpserver.url_for("/hook"),
        ],
        env={"WEBHOOK_SECRET": secret},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    events = events_of(result.stdout)
    assert "delivered" in result.stderr
    verifier = Webhook(secret)
    got = {}
    for body, headers in received:
        lowered = {k.lower(): v for k, v in headers.items()}
        payload = verifier.verify(body, lowered)
        got[payload["id"]] = payload
        assert lowered["webhook-id"] == payload["id"]
    assert set(got) == {e["id"] for e in events}  # every event, none lost, before the command exited
