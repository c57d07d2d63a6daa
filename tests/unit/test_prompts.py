"""Prompts and the `<file>` reply parser."""

from __future__ import annotations

import pytest

from shared.providers.base import PlanContext, TaskContext, TransformKind
from shared.providers.prompts import PLAN_SYSTEM_PROMPT, heal_prompt, parse_files, plan_prompt, task_prompt


def test_parse_files_reads_blocks_and_keeps_code_that_mentions_the_closing_tag() -> None:
    reply = (
        "Here you go:\n"
        '<file path="src/a.ts">\nexport const tag = "</file>";\n</file>\n'
        "<file path='b.txt'>one line</file>\n"
    )
    files = parse_files(reply)
    assert [(f.path, f.content) for f in files] == [
        ("src/a.ts", 'export const tag = "</file>";\n'),
        ("b.txt", "one line\n"),
    ]


@pytest.mark.parametrize("path", ["../x", "/etc/passwd", "a/../../b", "C:/x", "a\\b", "a\x00b", "x" * 300])
def test_parse_files_drops_unsafe_paths(path: str) -> None:
    files = parse_files(f'<file path="{path}">\nbad\n</file>\n<file path="ok.txt">\ngood\n</file>\n')
    assert [f.path for f in files] == ["ok.txt"]


def test_parse_files_drops_a_cut_off_block_without_swallowing_others() -> None:
    reply = '<file path="a.ts">\nunfinished\n<file path="b.ts">\nb\n</file>\n<file path="c.ts">\ncut'
    assert [(f.path, f.content) for f in parse_files(reply)] == [("b.ts", "b\n")]


def test_parse_files_strips_one_fence_normalises_paths_and_keeps_the_last_duplicate() -> None:
    reply = ('<file path="./src//x.py">\n```python\nprint(1)\n```\n</file>\n'
             '<file path="src/x.py">\nprint(2)\n</file>\n')
    assert [(f.path, f.content) for f in parse_files(reply)] == [("src/x.py", "print(2)\n")]
    only = parse_files('<file path="./src//x.py">\n```python\nprint(1)\n```\n</file>')
    assert [(f.path, f.content) for f in only] == [("src/x.py", "print(1)\n")]


def test_plan_prompt_keeps_the_system_part_stable_and_puts_the_request_in_user() -> None:
    a = plan_prompt("a landing page", PlanContext(build_id="b1", framework="react"))
    b = plan_prompt("a blog", PlanContext(build_id="b2", files={"README.md": "# hi"}))
    assert a.system == b.system == PLAN_SYSTEM_PROMPT
    assert "a landing page" in a.user and "react" in a.user
    assert "README.md" in b.user and "# hi" in b.user
    for word in ("create_file", "modify_file", "create_component", "setup_config", "install_deps",
                 "estimatedDuration", "priority", "targetPath", "dependencies", '{"tasks"'):
        assert word in PLAN_SYSTEM_PROMPT


def test_task_prompt_varies_by_kind_and_type_and_shows_the_target_first() -> None:
    ctx = TaskContext(build_id="b", task_id="t", task_type="install_deps", task_name="Deps",
                      target_path="package.json", files={"a.ts": "A", "package.json": "{}"})
    gen = task_prompt(TransformKind.code_gen, {"prompt": "add react"}, ctx)
    fix = task_prompt(TransformKind.lint_fix, {"prompt": "add react"}, ctx)
    assert gen.system != fix.system and '<file path="' in gen.system
    assert "dependency manifest" in gen.user and "add react" in gen.user
    assert gen.user.index('path="package.json"') < gen.user.index('path="a.ts"')


def test_heal_prompts() -> None:
    task = heal_prompt({"text": '{"id": 1', "error": "cut off", "purpose": "task"})
    deps = heal_prompt({"text": "{}", "error": "cycles", "purpose": "dependencies", "cycles": ["a->b->a"]})
    assert '{"id": 1' in task.user and "cut off" in task.user
    assert '"dependencies"' in deps.user and "a->b->a" in deps.user
    with pytest.raises(ValueError):
        heal_prompt({"text": "", "purpose": "other"})


def test_the_worked_example_in_the_system_prompt_is_a_valid_plan_in_dependency_order() -> None:
    from shared.models.plan import Task
    from shared.providers.streaming import parse_plan_text

    example = PLAN_SYSTEM_PROMPT[PLAN_SYSTEM_PROMPT.index("Example, for the request"):]
    tasks = [Task.model_validate(t) for t in parse_plan_text(example)]
    assert len(tasks) == 6
    seen: set[str] = set()
    for task in tasks:
        assert set(task.dependencies) <= seen
        seen.add(task.id)
