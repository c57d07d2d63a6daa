"""Deterministic plans and file contents for the mock provider.

Everything here is a pure function of the build prompt and the framework: the same prompt gives a
byte-identical plan and byte-identical files, in any process (no randomness, no `hash()`).

- `build_spec(prompt, framework)` reads the prompt: its subject ("coffee shop called Bean There"), its
  family (landing page, dashboard, form, blog, todo, or generic) and the framework (react, vue,
  svelte; react for anything else).
- `plan_tasks(prompt, framework)` is the plan the mock "writes": 5-8 tasks with real dependencies
  (project set-up -> tooling -> install -> components -> app shell).
- `task_files(...)` renders the files of one task: the planned task's own templates when the task is
  one of the plan's, otherwise a sensible file chosen by the target path's extension.

The code is in `render.py`; the templates that are whole files (the stylesheets, the form and todo
components, the validation and test modules) are files in `templates/`, read with
`importlib.resources`.

Components are described once in a tiny markup tree (`El`, `Txt`, `Expr`, `Each`, `Comp`) and
rendered as React TSX, a Vue single-file component or a Svelte component. User-derived text only
ever enters source code as JSON string literals (valid TypeScript) or escaped HTML text.
"""

from shared.providers.mock_content.render import (
    build_spec,
    find_blueprint,
    modified_content,
    plan_tasks,
    slugify,
    task_files,
    test_module,
    tidy,
)

__all__ = [
    "build_spec",
    "find_blueprint",
    "modified_content",
    "plan_tasks",
    "slugify",
    "task_files",
    "test_module",
    "tidy",
]
