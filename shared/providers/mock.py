"""The mock AI provider: deterministic plans and files, scriptable failures (docs/mock-provider.md).

Without a script, `MockProvider` writes a realistic plan for any prompt (see `mock_content`) and
streams it like a vendor would: the plan's JSON text goes through the same `PlanStreamParser` as a
real model's reply, in `chunk_chars` pieces every `chunk_delay_ms`, so tasks come out as their
objects close. Each task then "works" for about `estimatedDuration x 0.02` seconds (interruptible by
`TaskContext.cancel`) and returns deterministic file contents.

With a script (`STEPWISE_MOCK_SCRIPT=FILE`, passed here as `script_path`, or a dict), JSON of the
shape documented in docs/mock-provider.md#with-a-script:

- `plan.tasks` is serialised and streamed; `plan.text` is streamed exactly as given (malformed JSON
  and cycles included); `chunk_chars` (default 40) and `chunk_delay_ms` (default 0 with a script,
  10 without) set the pace. Without `plan`, the generated plan is streamed.
- `heal`: the replies of successive `heal_json` calls, in order; one call too many raises
  `ProviderError`. Without `heal`, the built-in healer answers (see `repair_task_json` and
  `acyclic_dependencies`).
- `tasks.<taskId>` / `default_task`: `delay_ms`, `fail_attempts` (attempts 1..N raise
  `ProviderError`), `timeout_attempts` (attempts 1..N wait past the deadline, then raise
  `ProviderTimeout`), `files` (returned verbatim) and `usage` (reported verbatim; the mock model is
  free, so `usage.costUsd`, when given, is the call's cost, e.g. to exercise budgets). A field a task's
  entry leaves out is taken from `default_task`, then from the defaults; without `delay_ms` a task
  takes its no-script time.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator

from shared.models.plan import TaskType, Usage
from shared.providers import mock_content
from shared.providers.base import (
    AIProvider,
    GeneratedFile,
    MalformedTask,
    PlanContext,
    PlanStream,
    ProviderError,
    ProviderTimeout,
    TaskContext,
    TransformKind,
    TransformResult,
)
from shared.providers.streaming import PlanStreamParser, parse_plan_text

DEFAULT_CHUNK_CHARS = 40
DEFAULT_CHUNK_DELAY_MS = 10.0  # no script: a visibly streaming plan
SCRIPTED_CHUNK_DELAY_MS = 0.0  # a script that does not set chunk_delay_ms: as fast as possible
WORK_SECONDS_PER_ESTIMATED_SECOND = 0.02  # a 10 s task works for 200 ms
MAX_DEFAULT_WORK_SECONDS = 3.0
FALLBACK_ESTIMATED_DURATION = 10.0
CHARS_PER_TOKEN = 4


# --------------------------------------------------------------------------------------------------
# The script
# --------------------------------------------------------------------------------------------------


class MockScriptError(ValueError):
    """The mock script cannot be used; the message names the offending field(s)."""

    def __init__(self, message: str, fields: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.fields = list(fields)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ScriptFile(_Strict):
    path: str = Field(min_length=1)
    content: str


class ScriptUsage(_Strict):
    promptTokens: int = Field(0, ge=0)
    completionTokens: int = Field(0, ge=0)
    # The mock model is free; a script that needs a call to cost money (budgets) states the cost.
    costUsd: float | None = Field(None, ge=0)


class ScriptTask(_Strict):
    delay_ms: float | None = Field(None, ge=0, le=3_600_000)
    fail_attempts: int = Field(0, ge=0)
    timeout_attempts: int = Field(0, ge=0)
    files: list[ScriptFile] | None = None
    usage: ScriptUsage | None = None


class ScriptPlan(_Strict):
    tasks: list[Any] | None = None
    text: str | None = None
    chunk_chars: int = Field(DEFAULT_CHUNK_CHARS, ge=1)
    chunk_delay_ms: float = Field(SCRIPTED_CHUNK_DELAY_MS, ge=0, le=60_000)

    @model_validator(mode="after")
    def _one_source(self) -> ScriptPlan:
        if self.tasks is not None and self.text is not None:
            raise ValueError("give plan.tasks or plan.text, not both")
        return self


def _reply_text(value: object) -> object:
    """A heal reply is raw text; a JSON object or array in the script stands for its serialisation."""
    if isinstance(value, dict | list):
        return json.dumps(value)
    return value


HealReply = Annotated[str, BeforeValidator(_reply_text)]


class MockScript(_Strict):
    plan: ScriptPlan | None = None
    heal: list[HealReply] | None = None
    tasks: dict[str, ScriptTask] = Field(default_factory=dict)
    default_task: ScriptTask | None = None

    def behaviour(self, task_id: str) -> ScriptTask:
        """The task's entry over `default_task` over the defaults, field by field."""
        merged: dict[str, Any] = {}
        for source in (self.default_task, self.tasks.get(task_id)):
            if source is not None:
                merged.update({name: getattr(source, name) for name in source.model_fields_set})
        return ScriptTask(**merged)

    def planned_duration(self, task_id: str) -> float | None:
        """`estimatedDuration` of a task in `plan.tasks`, if the script gives one."""
        for task in (self.plan.tasks or []) if self.plan else []:
            if isinstance(task, dict) and task.get("id") == task_id:
                return _number(task.get("estimatedDuration"))
        return None


def _where(loc: Sequence[int | str]) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(script)"


def parse_script(data: object, source: str = "mock script") -> MockScript:
    """Validate script data; a `MockScriptError` names every bad field."""
    try:
        return MockScript.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        fields = [_where(err["loc"]) for err in errors]
        details = "; ".join(f"{where}: {err['msg']}" for where, err in zip(fields, errors, strict=True))
        raise MockScriptError(f"invalid {source}: {details}", fields) from None


def load_script(path: str | Path) -> MockScript:
    source = f"mock script {path}"
    try:
        raw = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise MockScriptError(f"cannot read {source}: {exc.strerror or exc}") from None
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        where = f"line {exc.lineno} column {exc.colno}"
        raise MockScriptError(f"{source} is not JSON: {where}: {exc.msg}") from None
    return parse_script(data, source)


# --------------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------------


def _number(value: object) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool) and value >= 0:
        return float(value)
    return None


def estimate_tokens(text: str) -> int:
    """About four characters per token, rounded up."""
    return -(-len(text) // CHARS_PER_TOKEN)


def _cost_usd(model: str, prompt_tokens: int, completion_tokens: int) -> float:
    try:
        from shared.providers.pricing import cost_usd
    except ImportError:  # pragma: no cover - the pricing table is optional for the mock
        return 0.0
    cost = cost_usd(model, prompt_tokens, completion_tokens)
    return 0.0 if cost is None else float(cost)


def _wait_unless_cancelled(context: TaskContext, seconds: float) -> None:
    """Work for `seconds`; a set `context.cancel` ends the call at once."""
    if context.cancel.wait(max(seconds, 0.0)):
        raise ProviderError(f"mock: task {context.task_id!r} was cancelled", retryable=False)


def plan_text(prompt: str, framework: str | None = None) -> str:
    """The generated plan as the mock "LLM" writes it."""
    return json.dumps({"tasks": mock_content.plan_tasks(prompt, framework)}, indent=2, ensure_ascii=False)


# --------------------------------------------------------------------------------------------------
# Healing without a script
# --------------------------------------------------------------------------------------------------


def _drop_trailing_comma(out: list[str]) -> None:
    i = len(out)
    while i and out[i - 1].isspace():
        i -= 1
    if i and out[i - 1] == ",":
        del out[i - 1:]


def _close_json(text: str) -> str:
    """Minimal repair: drop trailing commas and stray closers, close the open string and brackets."""
    out: list[str] = []
    stack: list[str] = []
    in_string = escape = False
    for ch in text:
        if in_string:
            out.append(ch)
            if escape:
                escape = False
            elif ch == "\\":
                escape = True
            elif ch == '"':
                in_string = False
            continue
        if ch in "}]":
            if ch not in stack:
                continue
            while stack[-1] != ch:
                _drop_trailing_comma(out)
                out.append(stack.pop())
            _drop_trailing_comma(out)
            stack.pop()
        elif ch in "{[":
            stack.append("}" if ch == "{" else "]")
        in_string = ch == '"'
        out.append(ch)
        if not stack and ch in "}]":
            break
    if in_string:
        if escape:
            out.pop()  # a dangling backslash
        out.append('"')
    _drop_trailing_comma(out)
    if "".join(out).rstrip().endswith(":"):
        out.append(" null")
    for closer in reversed(stack):
        _drop_trailing_comma(out)
        out.append(closer)
    return "".join(out)


def _loads(text: str) -> object:
    try:
        return json.loads(text, strict=False)
    except ValueError:
        return None


def repair_task_json(text: str) -> dict[str, Any] | None:
    """The task object in `text`, repaired minimally; None if it cannot be recovered."""
    start = text.find("{")
    if start < 0:
        return None
    body = text[start:]
    for candidate in (body, _close_json(body)):
        value = _loads(candidate)
        if isinstance(value, dict):
            return value
    try:
        import jiter

        value = jiter.from_json(body.encode("utf-8", "replace"), partial_mode="on")
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _task_list(text: str) -> list[dict[str, Any]]:
    value = _loads(text)
    if isinstance(value, dict):
        value = value.get("tasks")
    if not isinstance(value, list):
        value = [item for item in parse_plan_text(text) if isinstance(item, dict)]
    return [task for task in value if isinstance(task, dict) and isinstance(task.get("id"), str)]


def _dependencies_of(task: Mapping[str, Any]) -> list[str]:
    nested = task.get("input")
    for value in (task.get("dependencies"), task.get("dependsOn"),
                  nested.get("dependencies") if isinstance(nested, dict) else None):
        if isinstance(value, list):
            return [dep for dep in value if isinstance(dep, str)]
    return []


def _cycle_edges(order: Sequence[str], deps: Mapping[str, list[str]]) -> set[tuple[str, str]]:
    """Edges to drop: inside each strongly connected component, every dependency on a task that is
    not listed earlier. What is left keeps listed order within a cycle, so the graph is acyclic."""
    import networkx as nx

    rank = {task_id: i for i, task_id in enumerate(order)}
    graph: Any = nx.DiGraph()
    graph.add_nodes_from(order)
    graph.add_edges_from((t, d) for t in order for d in deps[t] if d in rank)
    removed: set[tuple[str, str]] = set()
    for component in nx.strongly_connected_components(graph):
        for task_id in component:
            removed.update((task_id, d) for d in deps[task_id] if d in component and rank[d] >= rank[task_id])
    return removed


def acyclic_dependencies(text: str) -> str:
    """`{"tasks":[{"id", "dependencies"}]}` for the tasks in `text`, with every cycle broken."""
    order: list[str] = []
    deps: dict[str, list[str]] = {}
    for task in _task_list(text):
        if task["id"] not in deps:
            order.append(task["id"])
            deps[task["id"]] = _dependencies_of(task)
    if not order:
        raise ProviderError("mock: heal_json(dependencies) found no tasks in its input", retryable=False)
    removed = _cycle_edges(order, deps)
    tasks = [{"id": t, "dependencies": [d for d in deps[t] if (t, d) not in removed]} for t in order]
    return json.dumps({"tasks": tasks})


def builtin_heal(input: Mapping[str, Any]) -> str:
    text = str(input.get("text") or "")
    purpose = input.get("purpose", "task")
    if purpose == "dependencies":
        return acyclic_dependencies(text)
    if purpose != "task":
        raise ProviderError(f"mock: unknown heal_json purpose {purpose!r}", retryable=False)
    repaired = repair_task_json(text)
    if repaired is None:
        raise ProviderError("mock: heal_json could not repair the task JSON", retryable=False)
    return json.dumps(repaired, ensure_ascii=False)


# --------------------------------------------------------------------------------------------------
# The provider
# --------------------------------------------------------------------------------------------------


class MockPlanStream(PlanStream):
    """Streams `text` through `PlanStreamParser`; `chunks_consumed` counts the chunks read so far."""

    def __init__(self, text: str, chunk_chars: int, chunk_delay_s: float, prompt_tokens: int,
                 model: str) -> None:
        super().__init__()
        self.text = text
        self.chunks_consumed = 0
        self._chunk_chars = max(1, chunk_chars)
        self._chunk_delay_s = chunk_delay_s
        self._prompt_tokens = prompt_tokens
        self._model = model

    def chunks(self) -> Iterator[str]:
        for start in range(0, len(self.text), self._chunk_chars):
            yield self.text[start:start + self._chunk_chars]

    def __iter__(self) -> Iterator[dict[str, Any] | MalformedTask]:
        parser = PlanStreamParser()
        self.chunks_consumed = 0
        for chunk in self.chunks():
            if self.chunks_consumed and self._chunk_delay_s > 0:
                time.sleep(self._chunk_delay_s)
            self.chunks_consumed += 1
            yield from self._each(parser.feed(chunk))
        yield from self._each(parser.close())
        completion = estimate_tokens(self.text)
        self.usage = Usage(promptTokens=self._prompt_tokens, completionTokens=completion,
                           costUsd=_cost_usd(self._model, self._prompt_tokens, completion))


class MockProvider(AIProvider):
    """Deterministic stand-in for an LLM vendor; see the module docstring for the script."""

    name = "mock"
    model = "mock-1"

    def __init__(self, script_path: str | None = None, script: dict[str, Any] | None = None) -> None:
        if script_path is not None and script is not None:
            raise ValueError("give script_path or script, not both")
        self.script: MockScript | None = None
        if script_path is not None:
            self.script = load_script(script_path)
        elif script is not None:
            self.script = parse_script(script)
        self._heal_lock = threading.Lock()
        self._heal_calls = 0

    # -- planning ----------------------------------------------------------------------------------

    def plan_stream(self, prompt: str, context: PlanContext) -> MockPlanStream:
        text, chunk_chars, delay_ms = self._plan_source(prompt, context)
        prompt_text = prompt + (context.framework or "") + "".join(context.files.values())
        return MockPlanStream(text, chunk_chars, delay_ms / 1000, estimate_tokens(prompt_text), self.model)

    def _plan_source(self, prompt: str, context: PlanContext) -> tuple[str, int, float]:
        plan = self.script.plan if self.script is not None else None
        if plan is None:
            delay = DEFAULT_CHUNK_DELAY_MS if self.script is None else SCRIPTED_CHUNK_DELAY_MS
            return plan_text(prompt, context.framework), DEFAULT_CHUNK_CHARS, delay
        if plan.text is not None:
            text = plan.text
        elif plan.tasks is not None:
            text = json.dumps({"tasks": plan.tasks}, indent=2, ensure_ascii=False)
        else:
            text = plan_text(prompt, context.framework)
        return text, plan.chunk_chars, plan.chunk_delay_ms

    # -- transforms --------------------------------------------------------------------------------

    def transform(self, kind: TransformKind, input: dict[str, Any], context: TaskContext) -> TransformResult:
        try:
            kind = TransformKind(kind)
        except ValueError:
            raise ProviderError(f"mock: unknown transform kind {kind!r}", retryable=False) from None
        if kind is TransformKind.heal_json:
            return self._heal(input)
        behaviour = self.script.behaviour(context.task_id) if self.script else ScriptTask()
        # Like a vendor, the call is billed once it starts: a failed or abandoned attempt costs too.
        context.spend.model = self.model
        context.spend.report(self._task_usage(behaviour, input, context, []))
        self._work(behaviour, input, context)
        files = self._files(kind, behaviour, input, context)
        usage = self._task_usage(behaviour, input, context, files)
        context.spend.report(usage)
        return TransformResult(files=files, usage=usage)

    def _heal(self, input: Mapping[str, Any]) -> TransformResult:
        if self.script is not None and self.script.heal is not None:
            reply = self._next_heal_reply(self.script.heal)
        else:
            reply = builtin_heal(input)
        prompt_tokens = estimate_tokens(str(input.get("text") or ""))
        completion = estimate_tokens(reply)
        usage = Usage(promptTokens=prompt_tokens, completionTokens=completion,
                      costUsd=_cost_usd(self.model, prompt_tokens, completion))
        return TransformResult(text=reply, usage=usage)

    def _next_heal_reply(self, replies: Sequence[str]) -> str:
        with self._heal_lock:
            index = self._heal_calls
            self._heal_calls += 1
        if index >= len(replies):
            raise ProviderError(f"mock: heal_json call {index + 1} but the script has only "
                                f"{len(replies)} heal replies", retryable=False)
        return replies[index]

    # -- one task's work ---------------------------------------------------------------------------

    def _work(self, behaviour: ScriptTask, input: Mapping[str, Any], context: TaskContext) -> None:
        attempt = context.attempt
        if attempt <= behaviour.timeout_attempts:
            context.cancel.wait(max(context.deadline_s, 0.0) + 1.0)
            raise ProviderTimeout(f"mock: task {context.task_id!r} timed out on attempt {attempt} "
                                  f"(scripted for attempts 1-{behaviour.timeout_attempts})")
        if behaviour.delay_ms is not None:
            delay = behaviour.delay_ms / 1000
        else:
            delay = self._default_work_seconds(input, context)
        if delay > context.deadline_s:
            _wait_unless_cancelled(context, context.deadline_s)
            raise ProviderTimeout(f"mock: task {context.task_id!r} needs {delay:g}s, more than the "
                                  f"{context.deadline_s:g}s it was given")
        _wait_unless_cancelled(context, delay)
        if attempt <= behaviour.fail_attempts:
            raise ProviderError(f"mock: task {context.task_id!r} failed on attempt {attempt} "
                                f"(scripted for attempts 1-{behaviour.fail_attempts})")

    def _default_work_seconds(self, input: Mapping[str, Any], context: TaskContext) -> float:
        duration = _number(input.get("estimatedDuration"))
        if duration is None and self.script is not None:
            duration = self.script.planned_duration(context.task_id)
        if duration is None:
            blueprint = mock_content.find_blueprint(context.build_prompt, context.framework, context.task_id)
            duration = float(blueprint.duration) if blueprint else FALLBACK_ESTIMATED_DURATION
        return min(duration * WORK_SECONDS_PER_ESTIMATED_SECOND, MAX_DEFAULT_WORK_SECONDS)

    def _files(self, kind: TransformKind, behaviour: ScriptTask, input: Mapping[str, Any],
               context: TaskContext) -> list[GeneratedFile]:
        if behaviour.files is not None:
            return [GeneratedFile(f.path, f.content) for f in behaviour.files]
        raw_target = context.target_path or input.get("targetPath")
        target = raw_target if isinstance(raw_target, str) and raw_target else None
        name = str(input.get("name") or context.task_name or context.task_id)
        description = str(input.get("description") or "")
        existing = context.files.get(target) if target else None
        if kind is TransformKind.test_gen:
            path = target or f"tests/{mock_content.slugify(context.task_id, 'task')}.test.ts"
            return [GeneratedFile(path, mock_content.test_module(name, description))]
        if target and existing is not None:
            if kind in (TransformKind.refactor, TransformKind.lint_fix):
                tidied = mock_content.tidy(existing, expand_tabs=kind is TransformKind.lint_fix)
                return [GeneratedFile(target, tidied)]
            if context.task_type == TaskType.modify_file:
                note = f"{name}: {description}" if description else name
                return [GeneratedFile(target, mock_content.modified_content(target, existing, note))]
        return mock_content.task_files(context.build_prompt, context.framework, context.task_id,
                                       context.task_type, target, name, description)

    def _task_usage(self, behaviour: ScriptTask, input: Mapping[str, Any], context: TaskContext,
                    files: Sequence[GeneratedFile]) -> Usage:
        if behaviour.usage is not None:
            prompt_tokens = behaviour.usage.promptTokens
            completion = behaviour.usage.completionTokens
            if behaviour.usage.costUsd is not None:
                return Usage(promptTokens=prompt_tokens, completionTokens=completion,
                             costUsd=behaviour.usage.costUsd)
        else:
            request = json.dumps(input, sort_keys=True, default=str, ensure_ascii=False)
            context_chars = sum(len(content) for content in context.files.values())
            prompt_tokens = estimate_tokens(context.build_prompt + request)
            prompt_tokens += -(-context_chars // CHARS_PER_TOKEN)
            completion = sum(estimate_tokens(f.content) for f in files)
        return Usage(promptTokens=prompt_tokens, completionTokens=completion,
                     costUsd=_cost_usd(self.model, prompt_tokens, completion))
