"""Prompts for the real providers, and the parser for the files a task reply contains.

Why split `system` from `user`: the system part of each prompt is byte-for-byte stable across
builds (it depends only on the prompt kind), so the Anthropic provider marks it with
`cache_control` and later calls read it from the prompt cache at a tenth of the input price. All
per-build text (the user's prompt, file contents, the task) goes in `user`.

Files come back as `<file path="...">...</file>` blocks: unlike JSON, source code needs no escaping
inside them, so the model cannot break the format by forgetting a backslash.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from shared.models.plan import (
    MAX_PATH_LENGTH,
    MAX_TASK_DESCRIPTION_LENGTH,
    MAX_TASK_ID_LENGTH,
    MAX_TASK_PROMPT_LENGTH,
    TaskType,
    UnsafePathError,
    safe_relative_path,
)
from shared.providers.base import GeneratedFile, PlanContext, TaskContext, TransformKind

MAX_CONTEXT_FILE_CHARS = 24_000  # per file shown to the model
MAX_CONTEXT_TOTAL_CHARS = 120_000  # all files shown to the model in one call
# Output budgets that every model in the pricing table accepts (claude-3-5-haiku and
# claude-3-5-sonnet cap output at 8192 tokens).
PLAN_MAX_TOKENS = 8192
TASK_MAX_TOKENS = 8192
HEAL_MAX_TOKENS = 4096


@dataclass(frozen=True)
class Prompt:
    """`system` is stable (cacheable); `user` carries everything specific to this call."""

    system: str
    user: str
    max_tokens: int


_TASK_TYPES = ", ".join(f'"{t.value}"' for t in TaskType)


def _example_task(id: str, type: str, name: str, description: str, seconds: int, priority: int,
                  prompt: str, context: str, target: str, deps: list[str]) -> dict[str, Any]:
    return {"id": id, "type": type, "name": name, "description": description,
            "estimatedDuration": seconds, "priority": priority,
            "input": {"prompt": prompt, "context": context, "targetPath": target, "dependencies": deps}}


# A worked example in the (cached) system prompt: it shows the level of detail wanted, and lifts the
# prompt past the minimum length Anthropic caches (1024 tokens on Sonnet/Opus).
_PLAN_EXAMPLE_TASKS = [
    _example_task(
        "setup-project", "setup_config", "Create package.json and Vite config",
        "Project manifest and build configuration for a React + Vite + TypeScript app.", 15, 0,
        "Write package.json (scripts dev/build/preview; react, react-dom; dev: vite, @vitejs/plugin-react, "
        "typescript) and vite.config.ts using the React plugin.",
        "Single-page site, no router.", "package.json", []),
    _example_task(
        "styles", "create_file", "Write the global stylesheet",
        "Colour palette, typography and layout utilities shared by every section.", 20, 1,
        "CSS custom properties for a warm coffee palette (espresso, crema, cream), a serif heading font "
        "stack, a .container class (max-width 1100px) and responsive section spacing.",
        "Imported once by src/main.tsx.", "src/styles.css", ["setup-project"]),
    _example_task(
        "hero", "create_component", "Create the Hero section",
        "Headline, tagline and a call to action linking to the menu section.", 30, 2,
        'Export default function Hero(): an <h1>, one sentence of copy and an <a href="#menu"> styled as a '
        "button. Use the classes from styles.css.",
        "Shop name: Bean There.", "src/components/Hero.tsx", ["styles"]),
    _example_task(
        "menu", "create_component", "Create the Menu section",
        "A responsive grid of drinks with names, descriptions and prices.", 30, 2,
        'Export default function Menu(): <section id="menu"> with a typed array of six drinks rendered as '
        "cards in a CSS grid (1 column on mobile, 3 on desktop).",
        "Prices in USD.", "src/components/Menu.tsx", ["styles"]),
    _example_task(
        "app", "create_file", "Compose the page", "App component rendering Hero then Menu.", 15, 3,
        "Write src/App.tsx rendering <Hero /> and <Menu /> inside <main>.",
        "Components are default exports from src/components/.", "src/App.tsx", ["hero", "menu"]),
    _example_task(
        "entry", "create_file", "Write the entry point", "Mounts App and imports the global styles.", 10, 4,
        "Write src/main.tsx: createRoot(document.getElementById('root')!) rendering <App /> in StrictMode, "
        "importing ./styles.css.",
        'index.html has <div id="root">.', "src/main.tsx", ["app"]),
]
_PLAN_EXAMPLE = '{"tasks": [\n' + ",\n".join(json.dumps(t) for t in _PLAN_EXAMPLE_TASKS) + "\n]}"

PLAN_SYSTEM_PROMPT = f"""You are the planner of Stepwise, a build system that turns a request into a \
small project by running a plan of tasks. Another model executes each task later, one file or \
config change at a time, seeing only the task's own fields and the files its dependencies wrote.

Reply with exactly one JSON object and nothing else: no prose, no Markdown fences.

Its shape:
{{"tasks": [
  {{
    "id": "short-kebab-case-id, unique in the plan, at most {MAX_TASK_ID_LENGTH} characters",
    "type": one of {_TASK_TYPES},
    "name": "imperative title, at most 80 characters",
    "description": "one or two sentences: what this task produces and why (at most {MAX_TASK_DESCRIPTION_LENGTH:,} characters)",
    "estimatedDuration": seconds as a number (typically 10-60),
    "priority": integer 0-1000, lower runs first among tasks that are ready at the same time,
    "input": {{
      "prompt": "precise instructions for the executing model: contents, exports, behaviour",
      "context": "facts the executor needs that it cannot see otherwise (names, props, routes)",
      (prompt and context: at most {MAX_TASK_PROMPT_LENGTH:,} characters each)
      "targetPath": "relative/posix/path.ext inside the project",
      "dependencies": ["ids of tasks whose output this task needs"]
    }}
  }}
]}}

Rules:
- 3 to 12 tasks, never more than the request's stated maximum. Each task writes or changes one
  file (or one small group of config files).
- List tasks in dependency order: every id in "dependencies" names a task listed earlier.
- Dependencies must be real: a task depends on another only if it imports, configures or edits
  that task's output. Independent tasks must not depend on each other, so they can run in parallel.
  Never create cycles.
- "targetPath" is relative to the project root, uses forward slashes, never starts with "/" and
  never contains "..". Use the framework's conventional layout.
- Types: "setup_config" for configuration files (package.json, tsconfig, tailwind config, ...);
  "install_deps" for dependency manifests; "create_component" for a UI component;
  "create_file" for any other new file; "modify_file" to change a file that already exists
  (only files listed as existing, or written by an earlier task).
- Put everything the executor needs in "prompt" and "context": it does not see the user's request.
- Use double-quoted JSON strings with proper escapes; no comments, no trailing commas.

Example, for the request "a landing page for a coffee shop" with framework "react" (shown for the
shape and the level of detail only; plan each request on its own terms):
{_PLAN_EXAMPLE}
Note how "hero" and "menu" do not depend on each other (they run in parallel) and both wait for the
stylesheet they use.
"""

_TASK_SYSTEM_PROMPT = """You are a senior software engineer executing one task of a Stepwise build. \
Write complete, working, production-quality files: no placeholders, no "TODO: implement", no \
elided sections ("..."). Follow the conventions of the project's framework and of the files you \
are shown.

Reply with the files only, each in this exact form, with the file's full content between the tags:

<file path="relative/path/inside/the/project.ext">
full file content
</file>

Rules:
- Paths are relative to the project root, use forward slashes, never start with "/" and never
  contain "..".
- Do not wrap the content in Markdown fences inside the tags, and do not escape it.
- Write nothing outside the <file> blocks.
"""

# What each transform kind asks for, on top of the task system prompt.
_KIND_INSTRUCTIONS: dict[TransformKind, str] = {
    TransformKind.code_gen: "Create the file(s) this task describes.",
    TransformKind.refactor: ("Change the existing file(s) as the task describes. Return the COMPLETE new "
                             "content of every file you change; keep everything you were not asked to "
                             "change."),
    TransformKind.test_gen: ("Write tests for the code you are shown, using the project's test framework. "
                             "Cover normal behaviour, edge cases and errors."),
    TransformKind.lint_fix: ("Fix the lint and type errors described, without changing behaviour. Return the "
                             "COMPLETE corrected content of every file you change."),
}

# What each task type means for the files written.
_TYPE_INSTRUCTIONS: dict[str, str] = {
    TaskType.create_file: "Write the target file.",
    TaskType.modify_file: "The target file exists (shown below if available): return its full new content.",
    TaskType.create_component: ("Write the component in the target file, typed, accessible (semantic HTML, "
                                "labels, alt text) and exported the way the framework expects."),
    TaskType.setup_config: "Write the configuration file(s) with valid syntax for their format.",
    TaskType.install_deps: ("Write or update the dependency manifest (for example package.json or "
                            "requirements.txt) with exact, currently published versions. Keep existing "
                            "entries unless told to remove them."),
}

_HEAL_SYSTEM_PROMPT = """You repair JSON written by another model for the Stepwise planner. \
Reply with the repaired JSON only: no prose, no Markdown fences, no comments, no trailing commas.
"""

_HEAL_TASK = f"""Repair this single task object so that it is valid JSON with these fields:
"id" (string), "type" (one of {_TASK_TYPES}), "name" (string), "description" (string),
"estimatedDuration" (number, seconds), "priority" (integer, lower first),
"input": {{"prompt", "context", "targetPath" (relative POSIX path inside the project), \
"dependencies" (array of task ids)}}.
Keep every value the text already has; only fix syntax, missing quotes or brackets, and wrong types.
If it was cut off, close it, completing a cut-off string sensibly. Reply with the one object."""

_HEAL_DEPENDENCIES = """These tasks' dependencies contain cycles. Return the same tasks with \
dependencies that are acyclic and still real (a task depends on another only if it needs that \
task's output). Remove as few edges as possible.
Reply exactly as {"tasks": [{"id": "...", "dependencies": ["..."]}, ...]} listing every task."""


def plan_prompt(prompt: str, context: PlanContext) -> Prompt:
    """The planning call: the stable system prompt plus the user's request and project facts."""
    parts = [f"Request:\n{prompt.strip()}"]
    if context.framework:
        parts.append(f"Framework: {context.framework}")
    if context.files:
        listing = "\n".join(f"- {path} ({len(text)} chars)" for path, text in sorted(context.files.items()))
        parts.append(f"Existing project files:\n{listing}")
        parts.append(_files_block(context.files, None))
    if context.max_tasks is not None:
        parts.append(
            f"Maximum: {context.max_tasks:,} tasks. A plan with more is refused and the build fails, "
            "so plan at a coarser grain if the request is that big."
        )
    parts.append('Reply with the {"tasks": [...]} JSON object now.')
    user = "\n\n".join(p for p in parts if p)
    return Prompt(system=PLAN_SYSTEM_PROMPT, user=user, max_tokens=PLAN_MAX_TOKENS)


def task_prompt(kind: TransformKind, input: dict[str, Any], context: TaskContext) -> Prompt:
    """A code-writing transform (code_gen, refactor, test_gen, lint_fix)."""
    if kind is TransformKind.heal_json:
        return heal_prompt(input)
    system = f"{_TASK_SYSTEM_PROMPT}\n{_KIND_INSTRUCTIONS[kind]}\n"
    target = input.get("targetPath") or context.target_path
    lines = [f"Task: {input.get('name') or context.task_name} ({context.task_type})"]
    type_note = _TYPE_INSTRUCTIONS.get(context.task_type)
    if type_note:
        lines.append(type_note)
    if input.get("description"):
        lines.append(f"Description: {input['description']}")
    if target:
        lines.append(f"Target file: {target}")
    if context.framework:
        lines.append(f"Framework: {context.framework}")
    if context.build_prompt:
        lines.append(f"The overall request this build serves:\n{context.build_prompt.strip()}")
    if input.get("prompt"):
        lines.append(f"Instructions:\n{input['prompt']}")
    if input.get("context"):
        lines.append(f"Context:\n{input['context']}")
    if context.attempt > 1:
        lines.append(f"This is attempt {context.attempt}; the previous attempt failed. "
                     "Follow the format exactly.")
    if context.files:
        lines.append(_files_block(context.files, target))
    return Prompt(system=system, user="\n\n".join(lines), max_tokens=TASK_MAX_TOKENS)


def heal_prompt(input: dict[str, Any]) -> Prompt:
    """heal_json: purpose "task" repairs one task object; "dependencies" returns acyclic edges."""
    purpose = input.get("purpose", "task")
    if purpose == "dependencies":
        instructions = _HEAL_DEPENDENCIES
        cycles = input.get("cycles") or []
        if cycles:
            instructions += "\nCycles found: " + "; ".join(str(c) for c in cycles)
    elif purpose == "task":
        instructions = _HEAL_TASK
    else:
        raise ValueError(f"unknown heal_json purpose {purpose!r}")
    error = input.get("error", "invalid JSON")
    user = f"{instructions}\n\nProblem: {error}\n\nText:\n{input.get('text', '')}"
    return Prompt(system=_HEAL_SYSTEM_PROMPT, user=user, max_tokens=HEAL_MAX_TOKENS)


def _templates_version() -> str:
    """A hash of every prompt template: part of the task cache key, so editing a template stops
    serving outputs that the old wording produced."""
    import hashlib

    parts = [PLAN_SYSTEM_PROMPT, _TASK_SYSTEM_PROMPT, _HEAL_SYSTEM_PROMPT, _HEAL_TASK, _HEAL_DEPENDENCIES,
             json.dumps({str(k): v for k, v in _KIND_INSTRUCTIONS.items()}, sort_keys=True),
             json.dumps({str(k): v for k, v in _TYPE_INSTRUCTIONS.items()}, sort_keys=True),
             str(MAX_CONTEXT_FILE_CHARS), str(MAX_CONTEXT_TOTAL_CHARS), str(TASK_MAX_TOKENS)]
    return hashlib.sha256("\x00".join(parts).encode()).hexdigest()[:16]


def _files_block(files: dict[str, str], first: str | None) -> str:
    """Files shown to the model, the target first, each and all bounded so one call stays small."""
    order = sorted(files, key=lambda p: (p != first, p))
    blocks: list[str] = []
    budget = MAX_CONTEXT_TOTAL_CHARS
    for path in order:
        text = files[path]
        if len(text) > MAX_CONTEXT_FILE_CHARS:
            text = text[:MAX_CONTEXT_FILE_CHARS] + "\n[... truncated ...]"
        if len(text) > budget:
            blocks.append(f'<existing path="{path}" omitted="too large for this call"/>')
            continue
        budget -= len(text)
        blocks.append(f'<existing path="{path}">\n{text}\n</existing>')
    return "Project files you may need:\n" + "\n".join(blocks) if blocks else ""


# A file block: the path attribute, then content up to the first "</file>" that ends a line. The
# body may not run into the next block's opening tag, so one unclosed block cannot swallow the next.
_FILE_BLOCK = re.compile(
    r"""<file\s+path\s*=\s*(?P<q>["'])(?P<path>[^"'\n]{1,"""
    + str(MAX_PATH_LENGTH)
    + r"""})(?P=q)\s*>[ \t]*\r?\n?(?P<body>(?:(?!^[ \t]*<file\s).)*?)</file>[ \t]*$""",
    re.DOTALL | re.MULTILINE,
)
_FENCED = re.compile(r"\A[ \t]*```[\w.+-]*[ \t]*\r?\n(?P<inner>.*?)\r?\n[ \t]*```\s*\Z", re.DOTALL)


def parse_files(text: str) -> list[GeneratedFile]:
    """The `<file path="...">` blocks of a reply. Unsafe paths are dropped (never written); a block
    that was cut off (no closing tag) is dropped rather than written half-finished; for a path
    given twice the last block wins. A single Markdown fence around a body is removed."""
    found: dict[str, GeneratedFile] = {}
    for m in _FILE_BLOCK.finditer(text):
        try:
            path = safe_relative_path(m.group("path").strip())
        except UnsafePathError:
            continue
        body = m.group("body")
        fenced = _FENCED.match(body)
        if fenced:
            body = fenced.group("inner")
        if body and not body.endswith("\n"):
            body += "\n"
        found.pop(path, None)
        found[path] = GeneratedFile(path=path, content=body)
    return list(found.values())


def describe_for_log(prompt: Prompt) -> dict[str, Any]:
    """Sizes only: prompts can contain user code, so logs get lengths, not text."""
    return {"systemChars": len(prompt.system), "userChars": len(prompt.user), "maxTokens": prompt.max_tokens}


TEMPLATES_VERSION = _templates_version()

__all__ = [
    "PLAN_SYSTEM_PROMPT",
    "TEMPLATES_VERSION",
    "Prompt",
    "describe_for_log",
    "heal_prompt",
    "parse_files",
    "plan_prompt",
    "task_prompt",
]
