"""The mock provider: realistic deterministic plans and files, streaming, and the §8 script."""

from __future__ import annotations

import hashlib
import json
import posixpath
import re
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from graphlib import CycleError, TopologicalSorter
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.models.plan import Task, safe_relative_path
from shared.providers import mock as mock_module
from shared.providers.base import (
    MalformedTask,
    PlanContext,
    ProviderError,
    ProviderTimeout,
    TaskContext,
    TransformKind,
)
from shared.providers.mock import MockProvider, MockScriptError

LANDING = "Create a landing page with a hero section"
REPO_ROOT = Path(__file__).resolve().parents[2]


class RecordingEvent(threading.Event):
    """A cancel event whose waits return at once (not cancelled) and are recorded."""

    def __init__(self) -> None:
        super().__init__()
        self.waits: list[float | None] = []

    def wait(self, timeout: float | None = None) -> bool:
        self.waits.append(timeout)
        return self.is_set()


@pytest.fixture
def no_sleep(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Plan streaming without real pauses; the requested pauses are recorded."""
    slept: list[float] = []
    monkeypatch.setattr(mock_module.time, "sleep", slept.append)
    return slept


def fast() -> MockProvider:
    return MockProvider(script={"default_task": {"delay_ms": 0}})


def ctx(task: dict[str, Any], prompt: str, framework: str | None = None, **overrides: Any) -> TaskContext:
    values: dict[str, Any] = dict(
        build_id="b1", task_id=task["id"], task_type=task["type"], task_name=task["name"],
        build_prompt=prompt, framework=framework, target_path=task["input"].get("targetPath"),
    )
    values.update(overrides)
    return TaskContext(**values)


def task_input(task: dict[str, Any]) -> dict[str, Any]:
    return {"prompt": task["input"].get("prompt"), "context": task["input"].get("context"),
            "targetPath": task["input"].get("targetPath"), "name": task["name"],
            "description": task.get("description", "")}


def plan(provider: MockProvider, prompt: str, framework: str | None = None) -> list[Any]:
    items, _ = provider.plan(prompt, PlanContext(build_id="b1", framework=framework))
    return items


def build(provider: MockProvider, prompt: str, framework: str | None = None
          ) -> tuple[list[dict[str, Any]], dict[str, dict[str, str]]]:
    """Plan, then run every task: (tasks, {task id: {path: content}})."""
    tasks = plan(provider, prompt, framework)
    assert all(isinstance(t, dict) for t in tasks)
    outputs = {}
    for task in tasks:
        result = provider.transform(TransformKind.code_gen, task_input(task), ctx(task, prompt, framework))
        outputs[task["id"]] = {f.path: f.content for f in result.files}
    return tasks, outputs


def all_files(outputs: dict[str, dict[str, str]]) -> dict[str, str]:
    merged: dict[str, str] = {}
    for files in outputs.values():
        for path, content in files.items():
            assert path not in merged, f"{path} written by two tasks"
            merged[path] = content
    return merged


def assert_valid_plan(tasks: list[Any], low: int = 3, high: int = 8) -> list[Task]:
    assert low <= len(tasks) <= high
    models = [Task.model_validate(t) for t in tasks]
    ids = [t.id for t in models]
    assert len(set(ids)) == len(ids)
    for t in models:
        assert set(t.dependencies) <= set(ids), f"{t.id} depends on an unknown task"
        assert t.input.prompt and t.input.targetPath and t.estimatedDuration > 0
    targets = [t.input.targetPath for t in models]
    assert len(set(targets)) == len(targets)
    try:
        list(TopologicalSorter({t.id: t.dependencies for t in models}).static_order())
    except CycleError as exc:  # pragma: no cover - the assertion message is the point
        pytest.fail(f"plan has a cycle: {exc}")
    return models


_IMPORT = re.compile(r"""^\s*import\s+(?:type\s+)?(?:[\w{}\s,]+\s+from\s+)?["'](\.{1,2}/[^"']+)["']""", re.M)


def unresolved_imports(files: dict[str, str]) -> list[str]:
    """Relative imports in the sources that name no generated file."""
    missing = []
    for path, content in files.items():
        if not path.endswith((".ts", ".tsx", ".vue", ".svelte")):
            continue
        for spec in _IMPORT.findall(content):
            target = posixpath.normpath(posixpath.join(posixpath.dirname(path), spec))
            if not any(target + ext in files for ext in ("", ".ts", ".tsx")):
                missing.append(f"{path}: {spec}")
    return missing


# --------------------------------------------------------------------------------------------------
# The generated plan and files
# --------------------------------------------------------------------------------------------------


def test_landing_prompt_gives_a_realistic_plan_with_real_dependencies() -> None:
    tasks, outputs = build(fast(), LANDING)
    models = assert_valid_plan(tasks, 5, 8)
    by_id = {t.id: t for t in models}
    assert {"setup-project", "install-deps", "hero-section", "app-shell"} <= set(by_id)
    assert "setup-project" in by_id["install-deps"].dependencies
    assert by_id["hero-section"].dependencies == ["install-deps"]
    components = [t for t in models if t.type == "create_component"]
    assert len(components) >= 3
    assert {c.id for c in components} <= set(by_id["app-shell"].dependencies)
    assert len({t.priority for t in models}) > 1

    for t in models:  # every task writes at least its own target, at a safe path
        assert t.input.targetPath in outputs[t.id]
        assert all(safe_relative_path(p) == p for p in outputs[t.id])
    files = all_files(outputs)
    manifest = json.loads(files["package.json"])
    assert {"react", "react-dom"} <= set(manifest["dependencies"])
    assert "vite" in manifest["devDependencies"] and manifest["scripts"]["build"]
    json.loads(files["tsconfig.json"])
    assert "<script type=\"module\" src=\"/src/main.tsx\">" in files["index.html"]


def test_app_imports_exactly_the_created_components() -> None:
    _, outputs = build(fast(), LANDING)
    files = all_files(outputs)
    imported = re.findall(r'^import (\w+) from "\./components/(\w+)";$', files["src/App.tsx"], re.M)
    assert imported and all(name == module for name, module in imported)
    components = {posixpath.splitext(posixpath.basename(p))[0]
                  for p in files if p.startswith("src/components/")}
    assert {name for name, _ in imported} == components
    for name, _ in imported:
        assert f"<{name} />" in files["src/App.tsx"]
        assert f"export default function {name}(" in files[f"src/components/{name}.tsx"]
    assert 'import "./styles.css";' in files["src/App.tsx"]
    assert unresolved_imports(files) == []


def test_content_is_derived_from_the_prompt() -> None:
    prompt = "Build a landing page for Bean There coffee with pricing and testimonials"
    tasks, outputs = build(fast(), prompt)
    files = all_files(outputs)
    assert '"Bean There Coffee"' in files["src/components/Hero.tsx"]
    assert {"src/components/Pricing.tsx", "src/components/Testimonials.tsx"} <= set(files)
    assert json.loads(files["package.json"])["name"] == "bean-there-coffee"
    assert "Bean There" in json.dumps(tasks)


@pytest.mark.parametrize(("prompt", "component", "subject"), [
    ("Build an analytics dashboard for sales", "StatsCards", "sales"),
    ("Create a signup form for the Rocket newsletter", "SignupForm", "Rocket newsletter"),
    ("Create a blog about gardening", "PostList", "gardening"),
    ("Make a todo app for groceries", "TodoList", "groceries"),
    ("A weather widget showing the forecast", "WeatherWidget", "weather widget"),
])
def test_other_prompt_families_give_sensible_plans(prompt: str, component: str, subject: str) -> None:
    tasks, outputs = build(fast(), prompt)
    assert_valid_plan(tasks)
    files = all_files(outputs)
    assert any(p.startswith(f"src/components/{component}") for p in files), sorted(files)
    assert subject.lower() in json.dumps(tasks).lower()
    assert unresolved_imports(files) == []
    json.loads(files["package.json"])


@pytest.mark.parametrize(("framework", "ext", "entry"), [
    ("vue", ".vue", "src/main.ts"), ("Svelte", ".svelte", "src/main.ts"), ("react", ".tsx", "src/main.tsx"),
    ("angular", ".tsx", "src/main.tsx"),  # unknown: react
])
def test_framework_from_the_plan_context_is_respected(framework: str, ext: str, entry: str) -> None:
    tasks, outputs = build(fast(), LANDING, framework)
    assert_valid_plan(tasks, 5, 8)
    files = all_files(outputs)
    components = [p for p in files if p.startswith("src/components/")]
    assert components and all(p.endswith(ext) for p in components)
    assert f"src/App{ext}" in files and entry in files
    assert unresolved_imports(files) == []
    if ext == ".vue":
        assert '<script setup lang="ts">' in files["src/App.vue"]
        assert "@vitejs/plugin-vue" in json.loads(files["package.json"])["devDependencies"]


def test_same_prompt_gives_byte_identical_plan_and_files_across_instances(no_sleep: list[float]) -> None:
    first = MockProvider().plan_stream(LANDING, PlanContext(build_id="x"))
    second = MockProvider().plan_stream(LANDING, PlanContext(build_id="y"))
    assert list(first) == list(second) and first.text == second.text
    assert build(fast(), LANDING) == build(fast(), LANDING)


def test_plan_is_identical_across_processes_with_different_hash_seeds() -> None:
    code = (
        "import hashlib; from shared.providers.mock import plan_text;"
        "from shared.providers import mock_content as m;"
        f"p = {LANDING!r}; h = hashlib.sha256(plan_text(p).encode());"
        "[h.update(f.content.encode()) for t in m.plan_tasks(p) for f in "
        "m.task_files(p, None, t['id'], t['type'], t['input']['targetPath'])];"
        "print(h.hexdigest())"
    )
    digests = {
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                       cwd=REPO_ROOT, env={"PYTHONHASHSEED": seed, "PATH": ""}).stdout
        for seed in ("1", "2")
    }
    assert len(digests) == 1


# --------------------------------------------------------------------------------------------------
# Streaming
# --------------------------------------------------------------------------------------------------


def test_plan_streams_tasks_as_their_objects_close(no_sleep: list[float]) -> None:
    stream = MockProvider().plan_stream(LANDING, PlanContext(build_id="b1"))
    total_chunks = len(list(stream.chunks()))
    seen_at: list[int] = []
    for item in stream:
        assert isinstance(item, dict)
        seen_at.append(stream.chunks_consumed)
    assert len(seen_at) == len(json.loads(stream.text)["tasks"])
    assert seen_at[0] < total_chunks / 2  # the first task arrived long before the stream ended
    assert seen_at == sorted(seen_at) and len(set(seen_at)) == len(seen_at)  # one by one
    assert no_sleep and set(no_sleep) == {0.01}  # 10 ms between 40-character chunks
    assert all(len(c) == 40 for c in list(stream.chunks())[:-1])


def test_usage_is_reported_after_iteration(no_sleep: list[float]) -> None:
    stream = MockProvider().plan_stream(LANDING, PlanContext(build_id="b1"))
    assert stream.usage.completionTokens == 0
    list(stream)
    assert stream.usage.promptTokens == -(-len(LANDING) // 4)
    assert stream.usage.completionTokens == -(-len(stream.text) // 4)
    assert stream.usage.costUsd == 0.0


def test_scripted_plan_tasks_are_streamed_in_the_given_chunks() -> None:
    tasks = [{"id": "a", "type": "create_file", "name": "A", "input": {"targetPath": "a.txt"}},
             {"id": "b", "type": "create_file", "name": "B", "input": {"dependencies": ["a"]}}]
    provider = MockProvider(script={"plan": {"tasks": tasks, "chunk_chars": 7}})
    stream = provider.plan_stream("anything", PlanContext(build_id="b1"))
    assert list(stream) == tasks
    assert stream.chunks_consumed == -(-len(stream.text) // 7)
    assert json.loads(stream.text) == {"tasks": tasks}


def test_scripted_plan_text_with_malformed_json_yields_malformed_tasks() -> None:
    text = ('Here you go:\n{"tasks": [{"id": "a", "type": "create_file", "name": "A"}, '
            '{"id": "b", "name": oops}, {"id": "c", "type": "create_fi')
    provider = MockProvider(script={"plan": {"text": text, "chunk_chars": 5}})
    items = plan(provider, "anything")
    assert items[0] == {"id": "a", "type": "create_file", "name": "A"}
    assert [type(i) for i in items[1:]] == [MalformedTask, MalformedTask]
    assert "oops" in items[1].raw and items[2].raw.startswith('{"id": "c"')


def test_scripted_plan_text_with_a_cycle_is_passed_through() -> None:
    cyclic = [{"id": "a", "type": "create_file", "name": "A", "input": {"dependencies": ["b"]}},
              {"id": "b", "type": "create_file", "name": "B", "input": {"dependencies": ["a"]}}]
    provider = MockProvider(script={"plan": {"text": json.dumps({"tasks": cyclic})}})
    assert plan(provider, "x") == cyclic


# --------------------------------------------------------------------------------------------------
# Task work: delays, failures, timeouts, cancellation
# --------------------------------------------------------------------------------------------------

TASK = {"id": "hero", "type": "create_component", "name": "Hero",
        "input": {"targetPath": "src/components/Hero.tsx"}}


def run(provider: MockProvider, attempt: int = 1, **overrides: Any) -> Any:
    return provider.transform(TransformKind.code_gen, task_input(TASK), ctx(TASK, LANDING, attempt=attempt,
                                                                              **overrides))


def test_fail_attempts_fail_exactly_the_first_n_attempts() -> None:
    provider = MockProvider(script={"tasks": {"hero": {"fail_attempts": 2, "delay_ms": 0}}})
    for attempt in (1, 2):
        with pytest.raises(ProviderError) as info:
            run(provider, attempt)
        assert not isinstance(info.value, ProviderTimeout) and info.value.retryable
        assert f"attempt {attempt}" in str(info.value)
    assert run(provider, 3).files[0].path == "src/components/Hero.tsx"
    with pytest.raises(ProviderError):  # deterministic: attempt 1 fails again on a fresh run
        run(provider, 1)


def test_timeout_attempts_wait_past_the_deadline_then_time_out() -> None:
    provider = MockProvider(script={"tasks": {"hero": {"timeout_attempts": 1, "delay_ms": 0}}})
    cancel = RecordingEvent()
    with pytest.raises(ProviderTimeout):
        run(provider, 1, deadline_s=5.0, cancel=cancel)
    assert cancel.waits == [6.0]  # deadline + 1: longer than the task was given
    assert run(provider, 2, deadline_s=5.0).files


def test_a_timing_out_attempt_returns_promptly_when_cancelled() -> None:
    provider = MockProvider(script={"tasks": {"hero": {"timeout_attempts": 3}}})
    cancel = threading.Event()
    threading.Timer(0.05, cancel.set).start()
    started = time.monotonic()
    with pytest.raises(ProviderTimeout):
        run(provider, 1, deadline_s=60.0, cancel=cancel)
    assert time.monotonic() - started < 10  # not the 61 s it would otherwise block


def test_a_working_task_stops_when_cancelled() -> None:
    provider = MockProvider(script={"default_task": {"delay_ms": 600_000}})
    cancel = threading.Event()
    threading.Timer(0.05, cancel.set).start()
    started = time.monotonic()
    with pytest.raises(ProviderError, match="cancelled") as info:
        run(provider, deadline_s=3600.0, cancel=cancel)
    assert not info.value.retryable and time.monotonic() - started < 10


def test_work_longer_than_the_deadline_times_out() -> None:
    provider = MockProvider(script={"default_task": {"delay_ms": 5_000}})
    cancel = RecordingEvent()
    with pytest.raises(ProviderTimeout):
        run(provider, deadline_s=2.0, cancel=cancel)
    assert cancel.waits == [2.0]


def test_default_task_delay_applies_to_unlisted_tasks_and_entries_inherit_it() -> None:
    provider = MockProvider(script={"default_task": {"delay_ms": 3},
                                    "tasks": {"hero": {"fail_attempts": 1}, "other": {"delay_ms": 7}}})
    cancel = RecordingEvent()
    with pytest.raises(ProviderError):
        run(provider, 1, cancel=cancel)  # hero: fails once, with default_task's delay
    run(provider, 2, cancel=cancel)
    other = dict(TASK, id="other")
    provider.transform(TransformKind.code_gen, task_input(other), ctx(other, LANDING, cancel=cancel))
    unlisted = dict(TASK, id="unlisted")
    provider.transform(TransformKind.code_gen, task_input(unlisted), ctx(unlisted, LANDING, cancel=cancel))
    assert cancel.waits == [0.003, 0.003, 0.007, 0.003]


def test_default_work_time_follows_the_estimated_duration() -> None:
    provider = MockProvider()
    hero = next(t for t in plan(fast(), LANDING) if t["id"] == "hero-section")
    cancel = RecordingEvent()
    provider.transform(TransformKind.code_gen, task_input(hero), ctx(hero, LANDING, cancel=cancel))
    assert cancel.waits == [pytest.approx(hero["estimatedDuration"] * 0.02)]
    cancel.waits.clear()
    provider.transform(TransformKind.code_gen, {**task_input(hero), "estimatedDuration": 10},
                       ctx(hero, LANDING, cancel=cancel))
    assert cancel.waits == [pytest.approx(0.2)]


def test_a_real_short_delay_is_honoured() -> None:
    provider = MockProvider(script={"default_task": {"delay_ms": 20}})
    started = time.monotonic()
    run(provider)
    assert time.monotonic() - started >= 0.019  # Event.wait never returns early unless set


# --------------------------------------------------------------------------------------------------
# Scripted files and usage, other transform kinds
# --------------------------------------------------------------------------------------------------


def test_scripted_files_and_usage_are_used_verbatim() -> None:
    files = [{"path": "src/x.ts", "content": "export const x = 1;\n"}, {"path": "notes.md", "content": ""}]
    usage = {"promptTokens": 123, "completionTokens": 45}
    provider = MockProvider(script={"tasks": {"hero": {"delay_ms": 0, "files": files, "usage": usage}}})
    result = run(provider)
    assert [(f.path, f.content) for f in result.files] == [(f["path"], f["content"]) for f in files]
    assert result.usage.model_dump(include={"promptTokens", "completionTokens", "costUsd"}) == {
        "promptTokens": 123, "completionTokens": 45, "costUsd": 0.0}


def test_scripted_plan_tasks_get_generated_files_by_target() -> None:
    tasks = [{"id": "widget", "type": "create_component", "name": "Weather widget",
              "description": "Shows the forecast", "input": {"targetPath": "src/components/Widget.tsx"}},
             {"id": "cfg", "type": "setup_config", "name": "Config", "input": {}},
             {"id": "pkg", "type": "setup_config", "name": "Manifest",
              "input": {"targetPath": "package.json"}}]
    provider = MockProvider(script={"plan": {"tasks": tasks}, "default_task": {"delay_ms": 0}})
    _, outputs = build(provider, "Weather app")
    assert "export default function Widget()" in outputs["widget"]["src/components/Widget.tsx"]
    assert '"Shows the forecast"' in outputs["widget"]["src/components/Widget.tsx"]
    assert list(outputs["cfg"]) == ["config/cfg.json"] and json.loads(outputs["cfg"]["config/cfg.json"])
    assert json.loads(outputs["pkg"]["package.json"])["name"] == "weather-app"


def test_usage_without_a_script_is_deterministic_and_free() -> None:
    first, second = run(fast()), run(fast())
    assert first.usage == second.usage
    assert first.usage.completionTokens == sum(-(-len(f.content) // 4) for f in first.files) > 0
    assert first.usage.promptTokens > 0 and first.usage.costUsd == 0.0


def test_other_transform_kinds_work_on_the_target() -> None:
    provider = fast()
    messy = "const a = 1;   \n\tconst b = 2;\n\n\n"
    context = ctx(dict(TASK, type="modify_file"), LANDING, target_path="src/a.ts", files={"src/a.ts": messy})
    lint = provider.transform(TransformKind.lint_fix, {"name": "Lint"}, context)
    assert [(f.path, f.content) for f in lint.files] == [("src/a.ts", "const a = 1;\n  const b = 2;\n")]
    change = {"name": "Add c", "description": "export c"}
    modified = provider.transform(TransformKind.code_gen, change, context)
    assert modified.files[0].content.startswith(messy) and "Add c: export c" in modified.files[0].content
    tests = provider.transform(TransformKind.test_gen, {"name": "Hero"}, ctx(TASK, LANDING, target_path=None))
    assert tests.files[0].path == "tests/hero.test.ts" and "vitest" in tests.files[0].content


# --------------------------------------------------------------------------------------------------
# heal_json
# --------------------------------------------------------------------------------------------------


def heal(provider: MockProvider, text: str = "{", purpose: str = "task", **extra: Any) -> str:
    return provider.transform(TransformKind.heal_json, {"text": text, "error": "bad", "purpose": purpose,
                                                        **extra}, ctx(TASK, LANDING)).text


def test_scripted_heal_replies_come_in_order_then_run_out() -> None:
    provider = MockProvider(script={"heal": ['{"id": "a"}', {"tasks": []}, "not json"]})
    assert heal(provider) == '{"id": "a"}'
    assert json.loads(heal(provider, purpose="dependencies")) == {"tasks": []}
    assert heal(provider) == "not json"
    with pytest.raises(ProviderError, match="only 3 heal replies"):
        heal(provider)


def test_scripted_heal_replies_are_each_served_once_under_concurrency() -> None:
    replies = [f"reply-{i}" for i in range(40)]
    provider = MockProvider(script={"heal": replies})
    with ThreadPoolExecutor(max_workers=8) as pool:
        got = list(pool.map(lambda _: heal(provider), range(40)))
    assert sorted(got) == sorted(replies)


def test_builtin_heal_repairs_a_truncated_task_minimally() -> None:
    fragment = '{"id": "hero", "type": "create_component", "name": "Hero", "input": {"dependencies": ["a",'
    repaired = json.loads(heal(fast(), fragment))
    assert repaired == {"id": "hero", "type": "create_component", "name": "Hero",
                        "input": {"dependencies": ["a"]}}
    Task.model_validate(repaired)
    assert json.loads(heal(fast(), '{"id": "x", "type": "create_file", "name": "X",}'))["id"] == "x"
    with pytest.raises(ProviderError):
        heal(fast(), "no json here at all")


def test_builtin_heal_breaks_cycles_deterministically() -> None:
    edges = {"a": ["c"], "b": ["a"], "c": ["b"], "d": ["a", "d"]}
    tasks = [{"id": task_id, "input": {"dependencies": deps}} for task_id, deps in edges.items()]
    text = json.dumps(tasks)
    first = heal(fast(), text, purpose="dependencies", cycles=["a → c → b → a", "d → d"])
    assert first == heal(fast(), text, purpose="dependencies", cycles=[])
    healed = {t["id"]: t["dependencies"] for t in json.loads(first)["tasks"]}
    assert healed == {"a": [], "b": ["a"], "c": ["b"], "d": ["a"]}  # only the cycle edges went
    list(TopologicalSorter(healed).static_order())


# --------------------------------------------------------------------------------------------------
# Script validation
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("script", "field"), [
    ({"tasks": {"hero": {"fail_attempts": -1}}}, "tasks.hero.fail_attempts"),
    ({"tasks": {"hero": {"fail_attempt": 2}}}, "tasks.hero.fail_attempt"),
    ({"default_task": {"delay_ms": "soon"}}, "default_task.delay_ms"),
    ({"plan": {"chunk_chars": 0}}, "plan.chunk_chars"),
    ({"plan": {"tasks": [], "text": "{}"}}, "plan"),
    ({"heal": ["ok", 3]}, "heal[1]"),
    ({"tasks": {"hero": {"files": [{"path": "a.txt"}]}}}, "tasks.hero.files[0].content"),
    ({"planz": {}}, "planz"),
    (["not", "an", "object"], "(script)"),
])
def test_a_bad_script_is_refused_naming_the_field(script: Any, field: str) -> None:
    with pytest.raises(MockScriptError) as info:
        MockProvider(script=script)
    assert field in info.value.fields
    assert field in str(info.value)


def test_script_is_read_from_a_file(tmp_path: Path) -> None:
    path = tmp_path / "script.json"
    path.write_text(json.dumps({"plan": {"text": '{"tasks": [{"id": "only"}]}'}}), encoding="utf-8")
    assert plan(MockProvider(script_path=str(path)), "x") == [{"id": "only"}]
    path.write_text('{"plan": ', encoding="utf-8")
    with pytest.raises(MockScriptError, match="not JSON: line 1"):
        MockProvider(script_path=str(path))
    with pytest.raises(MockScriptError, match="cannot read"):
        MockProvider(script_path=str(tmp_path / "missing.json"))


# --------------------------------------------------------------------------------------------------
# Any prompt
# --------------------------------------------------------------------------------------------------


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(prompt=st.text(max_size=300), framework=st.sampled_from([None, "react", "vue", "svelte", "x"]))
def test_any_prompt_gives_a_valid_acyclic_plan_with_safe_files(prompt: str, framework: str | None) -> None:
    tasks, outputs = build(fast(), prompt, framework)
    models = assert_valid_plan(tasks)
    files = all_files(outputs)
    for t in models:
        assert t.input.targetPath in outputs[t.id]
    assert all(safe_relative_path(p) == p for p in files)
    json.loads(files["package.json"])
    assert unresolved_imports(files) == []
    digest = hashlib.sha256(json.dumps(tasks).encode()).hexdigest()
    assert digest == hashlib.sha256(json.dumps(plan(fast(), prompt, framework)).encode()).hexdigest()


def test_every_template_is_package_data_and_every_used_name_exists() -> None:
    import fnmatch
    import tomllib

    from shared.providers.mock_content import render
    from shared.providers.mock_content.templates import template

    folder = REPO_ROOT / "shared" / "providers" / "mock_content" / "templates"
    files = sorted(p.name for p in folder.iterdir() if p.suffix != ".py" and p.is_file())
    globs = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["shared"]
    for name in files:  # a wheel (and so an installed `stepwise`) carries each template
        assert any(fnmatch.fnmatch(f"providers/mock_content/templates/{name}", g) for g in globs), name
    used = set(re.findall(r'template\(\s*"([^"]+)"', Path(render.__file__).read_text()))
    used |= set(render._FORM_SOURCES.values()) | set(render._TODO_SOURCES.values())
    used |= {f"{family}.css" for family in ("landing", "dashboard", "form", "blog", "todo", "generic")}
    assert used == set(files)
    assert all(template(name) for name in files)
