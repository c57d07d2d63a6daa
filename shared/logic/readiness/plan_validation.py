"""From what the LLM wrote to a plan that can run: validate, heal, repair, and break cycles.

Fields longer than their limit are shortened (one warning lists the tasks): a cut description is
better than a dropped task, and an over-long id is shortened with every reference to it.
Malformed tasks are healed once through the provider's `heal_json` transform, else dropped with a
warning; duplicate ids are renamed; unknown and self dependencies dropped; tasks writing the same
targetPath serialized. Cycles go down the recovery ladder (docs/plans.md#from-the-llms-text-to-a-plan):
A drop the lowest-priority edge, B ask the LLM for acyclic dependencies, C run one by one (unless
ALLOW_LINEAR_FALLBACK=false), D with approval required: blocked, waiting for an edited plan,
E fail with circular_dependencies.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from shared.logic.readiness import dag
from shared.models.plan import (
    MAX_PLAN_TASKS,
    MAX_TASK_DESCRIPTION_LENGTH,
    MAX_TASK_ID_LENGTH,
    MAX_TASK_NAME_LENGTH,
    MAX_TASK_PROMPT_LENGTH,
    Recovery,
    Task,
    Usage,
)
from shared.providers.base import MalformedTask
from shared.providers.streaming import parse_plan_text

# The copy of the recovery ladder's visible rungs (the original design's texts). Rung C states what
# happens and asks nothing: the build goes on, there is no one to answer a question.
SEQUENTIAL_MESSAGE = "We couldn't optimize task order, so steps will run one-by-one. Expect a slightly longer build."
BLOCKED_MESSAGE = (
    "We hit a planning snag that we couldn't fix automatically. You can tweak the plan or rewrite your prompt."
)
HARD_ERROR_MESSAGE = "Plan couldn't be fixed. Try rephrasing or contact support."
CYCLES_EXPLAINED = "Cycles happen when Task A says it needs Task B, while Task B depends on Task A."

# heal(purpose, text, error, extra) -> raw reply text (or raises)
Healer = Callable[[str, str, str, dict[str, Any]], str]


@dataclass
class Warning_:
    warning: str
    message: str
    cycles: list[str] = field(default_factory=list)


@dataclass
class ValidatedPlan:
    tasks: list[Task]
    warnings: list[Warning_] = field(default_factory=list)
    recovery: Recovery | None = None
    cycles: list[str] = field(default_factory=list)
    cycle_tasks: list[list[str]] = field(default_factory=list)  # the tasks caught in each cycle
    cycle_edges: list[list[str]] = field(default_factory=list)  # [dependency, dependent] among them
    blocked: bool = False  # rung D: waiting for an edited plan
    failed: bool = False  # rung E
    usage: Usage = field(default_factory=Usage)
    recovery_steps: list[str] = field(default_factory=list)  # metrics: every rung tried


def plan_too_large_message(limit: int) -> str:
    return (
        f"The plan has more than {limit:,} tasks, the most a build may have (MAX_PLAN_TASKS={limit}). "
        "Ask for a smaller project, or split it into several builds."
    )


# A cycle is shown with at most this many of its tasks (a cycle through a whole big plan would
# otherwise make one string of every id), and a plan reports at most this many characters of cycles.
_CYCLE_SHOWN = 12
_CYCLES_CHARS = 16_000
_ELLIPSIS = "…"


def describe_cycles(cycles: list[list[str]]) -> list[str]:
    """Each cycle as "a → b → a", long ones elided in the middle, the whole list bounded."""
    out: list[str] = []
    used = 0
    for c in cycles:
        nodes = c[:-1]  # the cycle repeats its first task at the end
        if len(nodes) > _CYCLE_SHOWN:
            head, tail = nodes[: _CYCLE_SHOWN - 2], nodes[-1:]
            hidden = len(nodes) - len(head) - len(tail)
            text = dag.describe_cycle([*head, f"{_ELLIPSIS} ({hidden} more)", *tail, c[0]])
        else:
            text = dag.describe_cycle(c)
        if used + len(text) > _CYCLES_CHARS:
            break
        out.append(text)
        used += len(text)
    return out


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + _ELLIPSIS


class FieldClipper:
    """Brings each task the LLM wrote within the field limits, as it arrives.

    Ids, names, descriptions, prompts and contexts longer than their limit are cut (an id is cut to
    a prefix kept unique, and `remap` points every dependency on it to the new id); a dependency list
    longer than a plan can be loses its repeats, then its tail. The same instance sees the stream in
    order, so what a `plan_partial` showed is what the plan keeps."""

    def __init__(self) -> None:
        self.ids: dict[str, str] = {}  # over-long id -> the id it became
        self._short: set[str] = set()
        self.clipped: list[str] = []  # ids of the tasks something was cut from

    def clip(self, item: dict[str, Any] | MalformedTask) -> dict[str, Any] | MalformedTask:
        return self.clip_task(item) if isinstance(item, dict) else item

    def clip_task(self, item: dict[str, Any]) -> dict[str, Any]:
        out = dict(item)
        cut = False
        task_id = out.get("id")
        if isinstance(task_id, str) and len(task_id) > MAX_TASK_ID_LENGTH:
            out["id"] = self._shorten(task_id)
            cut = True
        for key, limit in (("name", MAX_TASK_NAME_LENGTH), ("description", MAX_TASK_DESCRIPTION_LENGTH)):
            value = out.get(key)
            if isinstance(value, str) and len(value) > limit:
                out[key], cut = _cut(value, limit), True
        raw_input = out.get("input")
        if isinstance(raw_input, dict):
            inp = dict(raw_input)
            for key in ("prompt", "context"):
                value = inp.get(key)
                if isinstance(value, str) and len(value) > MAX_TASK_PROMPT_LENGTH:
                    inp[key], cut = _cut(value, MAX_TASK_PROMPT_LENGTH), True
            deps = inp.get("dependencies")
            if isinstance(deps, list) and len(deps) > MAX_PLAN_TASKS:
                unique = list(dict.fromkeys(d for d in deps if isinstance(d, str)))
                inp["dependencies"], cut = unique[:MAX_PLAN_TASKS], True
            out["input"] = inp
        if cut:
            self.clipped.append(str(out.get("id", "?")))
        return out

    def _shorten(self, task_id: str) -> str:
        known = self.ids.get(task_id)
        if known is not None:
            return known
        short, n = task_id[:MAX_TASK_ID_LENGTH], 1
        while short in self._short:
            n += 1
            suffix = f"-{n}"
            short = task_id[: MAX_TASK_ID_LENGTH - len(suffix)] + suffix
        self.ids[task_id] = short
        self._short.add(short)
        return short

    def remap(self, tasks: list[Task]) -> list[Task]:
        """Point dependencies written with an over-long id to the id it became."""
        if not self.ids:
            return tasks
        return [
            with_dependencies(t, [self.ids.get(d, d) for d in t.dependencies]) if any(d in self.ids for d in t.dependencies)
            else t
            for t in tasks
        ]

    def warning(self) -> Warning_ | None:
        if not self.clipped:
            return None
        shown = ", ".join(self.clipped[:5]) + (f" and {len(self.clipped) - 5} more" if len(self.clipped) > 5 else "")
        return Warning_(
            "fields_truncated",
            f"{len(self.clipped)} task(s) had fields over the limits (ids {MAX_TASK_ID_LENGTH} characters, names "
            f"{MAX_TASK_NAME_LENGTH}, descriptions {MAX_TASK_DESCRIPTION_LENGTH:,}, prompt and context "
            f"{MAX_TASK_PROMPT_LENGTH:,} each); they were shortened: {shown}",
        )


def _error_text(exc: ValidationError) -> str:
    return "; ".join(f"{'.'.join(map(str, e['loc'])) or 'task'}: {e['msg']}" for e in exc.errors()[:5])


def parse_task(
    item: dict[str, Any] | MalformedTask,
    heal: Healer | None,
    warnings: list[Warning_],
    clipper: FieldClipper | None = None,
) -> Task | None:
    """Validate one task; heal it once if it is malformed; else drop it with a warning."""
    clipper = clipper or FieldClipper()
    item = clipper.clip(item)
    raw_text = item.raw if isinstance(item, MalformedTask) else json.dumps(item)
    if isinstance(item, dict):
        try:
            return Task.model_validate(item)
        except ValidationError as exc:
            error = _error_text(exc)
    else:
        error = item.error
    label = item.get("id", "?") if isinstance(item, dict) else "(unparsable)"
    if heal is not None:
        try:
            reply = heal("task", raw_text, error, {})
            healed = [h for h in parse_plan_text(reply) if isinstance(h, dict)]
            if not healed:
                try:
                    parsed = json.loads(reply)
                    healed = [parsed] if isinstance(parsed, dict) else []
                except ValueError:
                    healed = []
            if healed:
                return Task.model_validate(clipper.clip_task(healed[0]))
        except (ValidationError, ValueError, RuntimeError) as exc:
            error = f"{error}; healing failed: {exc}"[:500]
    warnings.append(Warning_("invalid_task", f"Dropped task {label}: {error}"[:1000]))
    return None


def repair_references(tasks: list[Task], warnings: list[Warning_]) -> list[Task]:
    """Rename duplicate ids; drop unknown and self dependencies."""
    seen: set[str] = set()
    out: list[Task] = []
    for t in tasks:
        if t.id in seen:
            n = 2
            while renamed_id(t.id, n) in seen:
                n += 1
            new_id = renamed_id(t.id, n)
            warnings.append(Warning_("duplicate_id", f"Task id {t.id} used twice; the second is now {new_id}"))
            t = t.model_copy(update={"id": new_id})
        seen.add(t.id)
        out.append(t)
    fixed: list[Task] = []
    for t in out:
        deps: list[str] = []
        for d in t.dependencies:
            if d == t.id:
                warnings.append(Warning_("self_dependency", f"Task {t.id} depended on itself; edge dropped"))
            elif d not in seen:
                warnings.append(
                    Warning_("unknown_dependency", f"Task {t.id} depended on unknown task {d}; edge dropped")
                )
            elif d not in deps:
                deps.append(d)
        fixed.append(with_dependencies(t, deps))
    return fixed


def renamed_id(task_id: str, n: int) -> str:
    suffix = f"-{n}"
    return task_id[: MAX_TASK_ID_LENGTH - len(suffix)] + suffix


def with_dependencies(task: Task, deps: list[str]) -> Task:
    return task.model_copy(update={"input": task.input.model_copy(update={"dependencies": deps})})


def apply_deps(tasks: list[Task], deps: dict[str, list[str]]) -> list[Task]:
    return [with_dependencies(t, list(deps.get(t.id, t.dependencies))) for t in tasks]


def resolve_cycles(
    plan: ValidatedPlan,
    heal: Healer | None,
    *,
    allow_linear: bool,
    approval_required: bool,
    fixed: Collection[str] = (),
) -> ValidatedPlan:
    """The ladder. `fixed`: tasks already handed to the dispatch state while the plan streamed
    (started, or waiting there for a dependency). Every dependency of such a task was known and is
    itself fixed, so none of them is ever part of a cycle: rung A never meets them, and rungs B to E
    act only on the other tasks, those not started: B and C leave the fixed tasks' dependencies as
    they are (C runs the others one by one after them), and D and E are never reached with fixed
    tasks (D needs approval, before which nothing starts; E fails the plan, and the fixed tasks
    finish first)."""
    tasks = plan.tasks
    deps = {t.id: list(t.dependencies) for t in tasks}
    cycles = dag.find_cycles(deps)
    if not cycles:
        return plan
    fixed = frozenset(fixed)
    plan.cycles = describe_cycles(cycles)
    plan.cycle_tasks, plan.cycle_edges = dag.cycle_components(deps)
    priority = {t.id: t.priority for t in tasks}
    order = {t.id: i for i, t in enumerate(tasks)}

    broken = dag.break_cycles_by_priority(deps, priority, order)  # A
    plan.recovery_steps.append(Recovery.auto_priority.value)
    if broken is not None:
        plan.tasks, plan.recovery = apply_deps(tasks, broken[0]), Recovery.auto_priority
        return plan

    if heal is not None:  # B
        plan.recovery_steps.append(Recovery.llm_healed.value)
        healed = _llm_dependencies(tasks, plan.cycles, heal)
        if healed is not None:
            healed.update({t: deps[t] for t in fixed})
        if healed is not None and dag.is_acyclic(healed):
            plan.tasks, plan.recovery = apply_deps(tasks, healed), Recovery.llm_healed
            return plan

    if allow_linear:  # C
        plan.recovery_steps.append(Recovery.linear_fallback.value)
        linear = dag.linear_order([t.id for t in tasks if t.id not in fixed], priority)
        first = next((t.id for t in tasks if t.id not in fixed and not linear.get(t.id)), None)
        if first is not None and fixed:
            linear[first] = [t.id for t in tasks if t.id in fixed]
        linear.update({t: deps[t] for t in fixed})
        plan.tasks, plan.recovery = apply_deps(tasks, linear), Recovery.linear_fallback
        plan.warnings.append(Warning_("sequential_execution", SEQUENTIAL_MESSAGE, plan.cycles))
        return plan

    if approval_required:  # D
        plan.blocked = True
        return plan
    plan.failed = True  # E
    return plan


def _llm_dependencies(tasks: list[Task], cycles: list[str], heal: Healer) -> dict[str, list[str]] | None:
    text = json.dumps({"tasks": [{"id": t.id, "name": t.name, "dependencies": t.dependencies} for t in tasks]})
    try:
        reply = heal("dependencies", text, "the dependencies contain cycles", {"cycles": cycles})
    except (RuntimeError, ValueError):
        return None
    known = {t.id for t in tasks}
    result = {t.id: list(t.dependencies) for t in tasks}
    found = False
    for item in parse_plan_text(reply):
        if isinstance(item, dict) and item.get("id") in known:
            raw = item.get("dependencies", item.get("input", {}).get("dependencies", []))
            if isinstance(raw, list):
                result[item["id"]] = [d for d in raw if isinstance(d, str) and d in known and d != item["id"]]
                found = True
    return result if found else None


def validate_plan(
    items: list[dict[str, Any] | MalformedTask],
    heal: Healer | None,
    *,
    allow_linear: bool,
    approval_required: bool,
    clipper: FieldClipper | None = None,
    fixed: Mapping[str, list[str]] | None = None,
) -> ValidatedPlan:
    """`clipper`: the one that already clipped `items` as they streamed (else a new one does).
    `fixed`: the tasks handed to the dispatch state while the plan streamed, with the dependencies
    they were handed with (theirs, plus the earlier writers of their targetPath): they keep them."""
    warnings: list[Warning_] = []
    clipper = clipper or FieldClipper()
    fixed = fixed or {}
    tasks = [t for t in (parse_task(i, heal, warnings, clipper) for i in items) if t is not None]
    clipped = clipper.warning()
    if clipped is not None:
        warnings.insert(0, clipped)
    tasks = repair_references(clipper.remap(tasks), warnings)
    tasks = [with_dependencies(t, list(fixed[t.id])) if t.id in fixed else t for t in tasks]
    plan = ValidatedPlan(tasks=tasks, warnings=warnings)
    plan = resolve_cycles(
        plan, heal, allow_linear=allow_linear, approval_required=approval_required, fixed=fixed.keys()
    )
    if not plan.blocked and not plan.failed:
        serialized = dag.serialize_shared_targets(
            [t.id for t in plan.tasks],
            {t.id: t.dependencies for t in plan.tasks},
            {t.id: t.input.targetPath for t in plan.tasks},
        )
        plan.tasks = apply_deps(plan.tasks, serialized)
    return plan


def validate_edited(tasks: list[Task], max_tasks: int | None = None) -> list[Task]:
    """An edited plan from the approval route: ids unique, references known, acyclic, at most
    `max_tasks` (default: the MAX_PLAN_TASKS setting) — or ValueError."""
    if max_tasks is None:
        from shared.settings import get_settings

        max_tasks = get_settings().max_plan_tasks
    ids = [t.id for t in tasks]
    if not tasks:
        raise ValueError("tasks: the edited plan has no tasks")
    if len(tasks) > max_tasks:
        raise ValueError(f"tasks: {len(tasks):,} tasks; a plan may have at most {max_tasks:,} (MAX_PLAN_TASKS)")
    if len(set(ids)) != len(ids):
        raise ValueError("tasks: task ids must be unique")
    known = set(ids)
    for t in tasks:
        bad = [d for d in t.dependencies if d not in known or d == t.id]
        if bad:
            raise ValueError(f"tasks: task {t.id} depends on unknown or itself: {', '.join(bad)}")
    cycles = dag.find_cycles({t.id: t.dependencies for t in tasks})
    if cycles:
        raise ValueError("tasks: the edited plan still has cycles: " + "; ".join(describe_cycles(cycles)))
    # As in a planned plan: tasks writing one path run one after another, so each sees the last one's file.
    serialized = dag.serialize_shared_targets(
        [t.id for t in tasks], {t.id: t.dependencies for t in tasks}, {t.id: t.input.targetPath for t in tasks}
    )
    return apply_deps(tasks, serialized)
