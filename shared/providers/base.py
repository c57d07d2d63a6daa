"""The AI provider protocol: every vendor (and the mock) sits behind this.

- `plan_stream(prompt, context)` returns a `PlanStream`: iterating it yields each task of the plan
  the moment its JSON object closes in the vendor's stream (a `dict`), or a `MalformedTask` for a
  fragment that could not be parsed (truncated final object, broken JSON) so the caller can heal it.
  After iteration, `stream.usage` holds the call's usage.
- `plan(prompt, context)` is the non-streaming convenience: all items plus usage.
- `transform(kind, input, context)` runs one piece of work: `code_gen`, `refactor`, `test_gen`,
  `lint_fix` return files; `heal_json` returns repaired JSON text.

Every call reports `Usage` (tokens and cost; cost `None` when the model's price is unknown).
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from shared.models.plan import Usage


class TransformKind(StrEnum):
    code_gen = "code_gen"
    refactor = "refactor"
    test_gen = "test_gen"
    lint_fix = "lint_fix"
    heal_json = "heal_json"


class ProviderError(RuntimeError):
    """A provider call failed (the vendor errored, or its reply could not be used)."""

    def __init__(self, message: str, *, retryable: bool = True) -> None:
        super().__init__(message)
        self.retryable = retryable


class ProviderTimeout(ProviderError):
    """A provider call did not finish within the time it was given."""


@dataclass(frozen=True)
class MalformedTask:
    """A fragment of the plan stream that is not valid JSON (to be healed or dropped)."""

    raw: str
    error: str


@dataclass
class PlanContext:
    build_id: str
    framework: str | None = None
    files: dict[str, str] = field(default_factory=dict)  # existing project files: path -> content
    max_tasks: int | None = None  # the most tasks the plan may have (MAX_PLAN_TASKS)


CHARS_PER_TOKEN = 4  # the usual rule of thumb, for estimates only


class Spend:
    """What one provider call has cost so far, as the provider learns it: the usage the vendor
    reported (summed over the call's own retries), else the characters sent and received.

    The provider writes it while it works; the task runner reads it when the attempt ends, however
    it ends — a failure, an unusable reply, or a call abandoned at its time limit that may still be
    running in its thread. So a billed call always counts: what the vendor reported or, when it
    reported nothing, an estimate marked as such.
    """

    def __init__(self, model: str = "") -> None:
        self.model = model
        self._lock = threading.Lock()
        self._reported: Usage | None = None
        self._sent_chars = 0
        self._received_chars = 0
        self._requests = 0
        self._ended = False

    def report(self, usage: Usage) -> None:
        """The call's usage so far as the vendor reports it (cumulative: replaces the last report)."""
        with self._lock:
            self._reported = usage.model_copy()

    def sent(self, chars: int) -> None:
        """A request the vendor accepted (it started answering), of `chars` characters."""
        with self._lock:
            self._requests += 1
            self._sent_chars += chars

    def received(self, chars: int) -> None:
        with self._lock:
            self._received_chars += chars

    def ended(self) -> None:
        """The reply ended normally: its usage report is final."""
        with self._lock:
            self._ended = True

    def usage(self) -> Usage:
        """What to bill: the report (for a reply cut short before its final count, its output
        raised to what was received), else an estimate from characters; nothing if no request got
        through."""
        from shared.providers.pricing import cost_usd

        with self._lock:
            received = -(-self._received_chars // CHARS_PER_TOKEN)
            if self._reported is not None:
                usage = self._reported.model_copy()
                if not self._ended and usage.completionTokens < received:
                    usage.completionTokens, usage.estimated = received, True
                    extra = cost_usd(self.model, 0, received - self._reported.completionTokens)
                    usage.costUsd = None if usage.costUsd is None or extra is None else usage.costUsd + extra
                return usage
            if not self._requests:
                return Usage()
            prompt = -(-self._sent_chars // CHARS_PER_TOKEN)
            return Usage(promptTokens=prompt, completionTokens=received,
                         costUsd=cost_usd(self.model, prompt, received), estimated=True)


@dataclass
class TaskContext:
    """What a task transform may use. `deadline_s` is the time left for this call, in seconds.
    `spend`: where the provider records what the call costs as it goes (see `Spend`)."""

    build_id: str
    task_id: str
    task_type: str
    task_name: str
    attempt: int = 1
    build_prompt: str = ""
    framework: str | None = None
    target_path: str | None = None
    files: dict[str, str] = field(default_factory=dict)  # files from dependencies + project files
    deadline_s: float = 60.0
    cancel: threading.Event = field(default_factory=threading.Event)
    spend: Spend = field(default_factory=Spend)


@dataclass
class GeneratedFile:
    path: str
    content: str


@dataclass
class TransformResult:
    files: list[GeneratedFile] = field(default_factory=list)
    text: str = ""
    usage: Usage = field(default_factory=Usage)


class PlanStream(ABC):
    """Iterate for tasks as they close; read `usage` afterwards.

    `more_ready`: true while the item just yielded is followed by others already parsed (they
    closed in the same piece of the stream), so taking the next one waits for nothing; a consumer
    may then handle them together."""

    usage: Usage

    def __init__(self) -> None:
        self.usage = Usage()
        self.more_ready = False

    @abstractmethod
    def __iter__(self) -> Iterator[dict[str, Any] | MalformedTask]: ...

    def _each(self, items: list[dict[str, Any] | MalformedTask]) -> Iterator[dict[str, Any] | MalformedTask]:
        """Yield what one piece of the stream closed, saying whether more of it follows."""
        for i, item in enumerate(items):
            self.more_ready = i + 1 < len(items)
            yield item
        self.more_ready = False


class AIProvider(ABC):
    name: str = "abstract"
    model: str = ""

    @abstractmethod
    def plan_stream(self, prompt: str, context: PlanContext) -> PlanStream: ...

    def plan(self, prompt: str, context: PlanContext) -> tuple[list[dict[str, Any] | MalformedTask], Usage]:
        stream = self.plan_stream(prompt, context)
        items = list(stream)
        return items, stream.usage

    @abstractmethod
    def transform(self, kind: TransformKind, input: dict[str, Any], context: TaskContext) -> TransformResult:
        """Run one transform. `input` for task kinds: {prompt, context, targetPath, description, name};
        for `heal_json`: {text, error, purpose} where purpose is "task" (repair one task object) or
        "dependencies" (return the plan's tasks with acyclic `dependencies`; `cycles` lists them).
        """

    def identity(self) -> str:
        """Provider and model, for cache keys."""
        return f"{self.name}:{self.model}"
