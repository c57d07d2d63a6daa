"""A build whose prompt, plan and uploaded files carry secrets and personal data leaves none of them in
any line the local runtime writes, with every function logging at DEBUG.

The build runs in its own process (the local runtime, every function in it), so everything it
writes — stdout and stderr, every function's log lines, the libraries' — is captured as a user
running it would see it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import task

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]

# What is planted, and a part of each that must never be written.
PLANTED = {
    "sk-ant-api03-AbCdEfGhIjKlMnOpQrStUvWxYz0123456789": "AbCdEfGhIjKlMnOp",
    "sk-proj-ZYXWVUTSRQPONMLKJIHG9876543210": "ZYXWVUTSRQPONMLK",
    "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw": "MfKQ9r8GKYqrTwjU",
    "Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2ln": "eyJhbGciOiJIUzI1NiJ9",
    "password=hunter2-Secret!": "hunter2",
    "api_key=AKIAIOSFODNN7EXAMPLE": "AKIAIOSFODNN7EXAMPLE",
    "jane.doe@example.com": "jane.doe@example",
    "4111 1111 1111 1111": "4111 1111 1111 1111",
    "5500005555555559": "5500005555555559",
}
SECRETS = " ".join(PLANTED)

DRIVER = r"""
import json, sys, time
from local.runtime import LocalRuntime

request = json.loads(sys.argv[1])
with LocalRuntime(env={"TASK_RETRY_BASE_SECONDS": "0"}) as rt:
    code, created = rt.invoke_api("POST", "/builds", user="dev", body=request)
    assert code == 202, created
    build_id = created["buildId"]
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        view = rt.invoke_api("GET", f"/builds/{build_id}", user="dev")[1]
        if view["status"] in ("completed", "completed_with_errors", "failed", "cancelled", "timed_out"):
            break
        time.sleep(0.1)
    print("RESULT " + json.dumps({"status": view["status"]}))
"""


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    folder = tmp_path_factory.mktemp("hygiene")
    plan = [
        task("config", type="setup_config", target="config/settings.env", name="Settings",
             input={"prompt": f"Keep these values: {SECRETS}", "context": SECRETS, "dependencies": []}),
        task("page", "config", target="src/contact.html", name="Contact page",
             input={"prompt": f"Show {SECRETS}", "targetPath": "src/contact.html", "dependencies": ["config"]}),
        task("edit", "page", type="modify_file", target="notes/jane.doe@example.com.txt", name="Edit notes"),
    ]
    script = folder / "script.json"
    # The first attempt of "page" fails: the error path logs too.
    script.write_text(json.dumps({"plan": {"tasks": plan}, "tasks": {"page": {"fail_attempts": 1}}}))
    request = {
        "prompt": f"Build a contact page. My keys and details: {SECRETS}",
        "files": [
            {"path": "config/settings.env", "content": f"ANTHROPIC_API_KEY={SECRETS}\n"},
            {"path": "notes/jane.doe@example.com.txt", "content": f"call me: {SECRETS}\n"},
            # A file path is logged (a task's context lists them): one upload named after each value.
            *({"path": f"planted/{value}.txt", "content": value} for value in PLANTED),
        ],
    }
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STEPWISE_", "AI_PROVIDER", "TASK_", "LOG_"))}
    env.update({"PYTHONPATH": str(ROOT), "LOG_LEVEL": "DEBUG", "STEPWISE_MOCK_SCRIPT": str(script)})
    done = subprocess.run([sys.executable, "-c", DRIVER, json.dumps(request)], capture_output=True, text=True,
                          timeout=150, env=env, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout, done.stderr


def test_the_build_ran_and_its_functions_logged_at_debug(written: tuple[str, str]) -> None:
    stdout, stderr = written
    assert 'RESULT {"status": "completed"}' in stdout
    messages = {json.loads(line).get("message") for line in stderr.splitlines() if line.startswith("{")}
    assert {"task.start", "task.complete", "task.error", "task.context", "plan.start"} <= messages


def test_no_planted_secret_or_personal_data_is_written(written: tuple[str, str]) -> None:
    everything = "\n".join(written)
    leaked = [value for value, part in PLANTED.items() if part in everything]
    assert not leaked, leaked
    for mark in ("[email]", "[card]", "[redacted-key]", "[redacted-secret]", "Bearer [redacted]", "password=[redacted]"):
        assert mark in everything  # the upload paths were logged, masked


def test_prompts_and_file_contents_are_logged_as_length_and_hash(written: tuple[str, str]) -> None:
    _, stderr = written
    [context] = [json.loads(line) for line in stderr.splitlines()
                 if line.startswith("{") and '"task.context"' in line and '"taskId":"config"' in line]
    assert set(context["prompt"]) == {"chars", "sha256"}
    assert {"config/settings.env", "notes/[email]"} <= {f["path"] for f in context["files"]}
    assert len(context["files"]) == 2 + len(PLANTED)
    assert all(set(f) == {"path", "chars", "sha256"} for f in context["files"])
