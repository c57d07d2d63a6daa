"""Context parsing and packaging helpers (no synth)."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from shared import constants as c

REPO_ROOT = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.infra, pytest.mark.xdist_group("infra")]  # one worker: one synth per stage
pytest.importorskip("aws_cdk", reason="infra tests need the [infra] extra (aws-cdk-lib, cdk-nag)")


def test_context_keys_are_camel_case_of_the_variables() -> None:
    from infra.config import context_key

    assert context_key(c.AI_PROVIDER) == "aiProvider"
    assert context_key(c.TASK_CACHE_TTL_SECONDS) == "taskCacheTtlSeconds"
    assert context_key(c.OPENAI_BASE_URL) == "openaiBaseUrl"


def test_defaults_come_from_settings() -> None:
    from infra.config import StackConfig
    from shared.settings import Settings

    config = StackConfig.from_mapping({})
    defaults = Settings.model_validate({})
    assert config.app_env[c.TASK_TIMEOUT_SECONDS] == "60"
    assert config.app_env[c.WEBHOOK_MAX_ATTEMPTS] == str(defaults.webhook_max_attempts)
    assert config.app_env[c.REQUIRE_PLAN_APPROVAL] == "false"
    assert config.app_env[c.STREAM_EXECUTION] == "true"  # tasks start while the plan streams
    assert c.WEBHOOK_URL not in config.app_env  # unset optional values are left out
    assert config.task_function_timeout_seconds == 120
    assert config.app_env[c.AI_PROVIDER] == "bedrock"  # the AWS default; locally it is the mock


def test_context_values_reach_the_environment() -> None:
    from infra.config import StackConfig

    config = StackConfig.from_mapping(
        {
            "aiProvider": "openai",
            "requirePlanApproval": "true",
            "streamExecution": False,
            "taskTimeoutSeconds": 90,
            "webhookUrl": "https://hooks.example.com/x",
        }
    )
    assert config.app_env[c.AI_PROVIDER] == "openai"
    assert config.app_env[c.REQUIRE_PLAN_APPROVAL] == "true"
    assert config.app_env[c.STREAM_EXECUTION] == "false"  # an operator turns it off per stage
    assert config.app_env[c.TASK_TIMEOUT_SECONDS] == "90"
    assert config.app_env[c.WEBHOOK_URL] == "https://hooks.example.com/x"
    assert config.task_function_timeout_seconds == 150


@pytest.mark.parametrize(
    ("context", "named"),
    [
        ({"aiProvider": "gpt"}, "aiProvider"),
        ({"taskTimeoutSeconds": "soon"}, "taskTimeoutSeconds"),
        ({"webhookMaxAttempts": 0}, "webhookMaxAttempts"),
        ({"frontendOrigin": "ftp://x"}, "frontendOrigin"),
        ({"alarmEmail": "nobody"}, "alarmEmail"),
        ({"taskMaxConcurrency": 1}, "taskMaxConcurrency"),
        ({"apiCloudWatchRole": "maybe"}, "apiCloudWatchRole"),
    ],
)
def test_invalid_context_fails_naming_the_key(context: dict[str, Any], named: str) -> None:
    from infra.config import ConfigError, StackConfig

    with pytest.raises(ConfigError, match=named):
        StackConfig.from_mapping(context)


def test_log_retention_rounds_up_to_a_cloudwatch_step() -> None:
    from aws_cdk import aws_logs as logs

    from infra.constructs.functions import log_retention

    assert log_retention(30) == logs.RetentionDays.ONE_MONTH
    assert log_retention(31) == logs.RetentionDays.TWO_MONTHS
    assert log_retention(5000) == logs.RetentionDays.TWO_YEARS


def test_layer_bundling_installs_the_hash_locked_closure_for_lambda_without_docker(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from infra import packaging

    calls: list[list[str]] = []

    def fake_run(cmd: list[str], **_: Any) -> subprocess.CompletedProcess[str]:
        calls.append(cmd)
        target = Path(cmd[cmd.index("--target") + 1])
        (target / "bin").mkdir(parents=True)
        (target / "pkg" / "__pycache__").mkdir(parents=True)
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(packaging.subprocess, "run", fake_run)
    bundler = packaging.PipLayerBundling(packaging.LAYER_LOCK)
    assert bundler.try_bundle(str(tmp_path), image=None) is True  # type: ignore[arg-type]
    (cmd,) = calls
    assert cmd[cmd.index("--platform") + 1] == "manylinux2014_aarch64"
    assert cmd[cmd.index("--python-version") + 1] == "3.12"
    assert cmd[cmd.index("--implementation") + 1] == "cp"
    assert "--only-binary=:all:" in cmd
    # Every artifact checked against its sha256, and nothing from outside the lock.
    assert "--require-hashes" in cmd and "--no-deps" in cmd
    assert Path(cmd[cmd.index("--requirement") + 1]) == packaging.LAYER_LOCK
    assert Path(cmd[cmd.index("--target") + 1]) == tmp_path / "python"
    assert not (tmp_path / "python" / "bin").exists()
    assert not (tmp_path / "python" / "pkg" / "__pycache__").exists()


def test_layer_bundling_failure_is_an_error_not_a_docker_fallback(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from infra import packaging

    monkeypatch.setattr(
        packaging.subprocess,
        "run",
        lambda cmd, **_: subprocess.CompletedProcess(cmd, 1, "", "THESE PACKAGES DO NOT MATCH THE HASHES"),
    )
    with pytest.raises(RuntimeError, match="DO NOT MATCH THE HASHES"):
        packaging.PipLayerBundling().try_bundle(str(tmp_path), image=None)  # type: ignore[arg-type]


def test_function_staging_copies_only_shared_and_the_function(tmp_path: Path) -> None:
    from infra.packaging import stage_function_code

    out = stage_function_code("task", dest=tmp_path / "task")
    assert sorted(p.name for p in out.iterdir()) == ["functions", "shared"]
    assert sorted(p.name for p in (out / "functions").iterdir()) == ["__init__.py", "task"]
    templates = Path("shared/providers/mock_content/templates")  # data files the mock reads
    shipped = sorted(p.name for p in (out / templates).iterdir())
    assert shipped == sorted(p.name for p in (REPO_ROOT / templates).iterdir() if p.name != "__pycache__")
    assert "base.css" in shipped and "form.vue" in shipped
    with pytest.raises(FileNotFoundError):
        stage_function_code("nope", dest=tmp_path / "nope")


def test_url_lists_from_the_command_line_are_comma_separated() -> None:
    from infra.config import StackConfig

    config = StackConfig.from_stage("dev", {"callbackUrls": "http://localhost:5173/cb, https://x.example.com/cb"})
    assert config.callback_urls == ("http://localhost:5173/cb", "https://x.example.com/cb")
    assert config.logout_urls == ("http://localhost:5173/",)  # the committed dev value


def test_dispatch_event_source_stays_below_the_reservation() -> None:
    from infra.config import DISPATCH_HEADROOM, StackConfig

    config = StackConfig.from_stage("dev", {"dispatchReservedConcurrency": 12})
    assert config.dispatch_queue_concurrency == 12 - DISPATCH_HEADROOM >= 2
