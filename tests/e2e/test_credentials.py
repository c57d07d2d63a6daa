"""A provider without its key is bad configuration: `stepwise build` and `stepwise serve` stop at
once with exit code 2 and a message naming the variable, instead of starting a build that fails."""

from __future__ import annotations

import pytest

from tests.e2e.conftest import free_port, run_stepwise

pytestmark = pytest.mark.e2e


@pytest.fixture(autouse=True)
def no_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("ANTHROPIC_API_KEY", "OPENAI_API_KEY", "PROVIDER_SECRET_ARN"):
        monkeypatch.delenv(name, raising=False)


@pytest.mark.parametrize(("provider", "variable"), [("anthropic", "ANTHROPIC_API_KEY"), ("openai", "OPENAI_API_KEY")])
def test_build_without_the_providers_key_exits_2_naming_it(tmp_path, provider: str, variable: str) -> None:
    result = run_stepwise(["build", "a landing page", "--provider", provider, "--json", "--out", str(tmp_path)])
    assert result.returncode == 2, result.stderr[-2000:]
    assert variable in result.stderr
    assert result.stdout == ""  # no build was started: not a single event


def test_serve_without_the_providers_key_exits_2_naming_it() -> None:
    result = run_stepwise(["serve", "--port", str(free_port())], env={"AI_PROVIDER": "anthropic"}, timeout=60)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "ANTHROPIC_API_KEY" in result.stderr
    assert "Stepwise API on" not in result.stdout

