"""The task cache key: identical tasks share it; anything that changes the output changes it,
including an edit to the prompt templates."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from shared.logic.attempts import result_cache
from shared.models.plan import Task
from shared.providers import prompts
from tests.helpers import task, task_context


def key(**context: Any) -> str | None:
    svc: Any = SimpleNamespace(settings=SimpleNamespace(task_cache_ttl_seconds=3600),
                               provider=SimpleNamespace(identity=lambda: "mock:mock-1"))
    return result_cache.key_of(svc, Task.model_validate(task("hero", target="src/Hero.tsx")), task_context(**context))


def test_identical_tasks_share_a_key_and_another_file_content_changes_it() -> None:
    assert key(files={"a.txt": "1"}) == key(files={"a.txt": "1"})
    assert key(files={"a.txt": "1"}) != key(files={"a.txt": "2"})


def test_editing_a_prompt_template_changes_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    before = key()
    monkeypatch.setattr(prompts, "_TASK_SYSTEM_PROMPT", prompts._TASK_SYSTEM_PROMPT + "\nBe terse.")
    edited = prompts._templates_version()
    assert edited != prompts.TEMPLATES_VERSION
    monkeypatch.setattr(result_cache, "TEMPLATES_VERSION", edited)
    assert key() != before
