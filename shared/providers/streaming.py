"""Incremental plan parser: turn an LLM's plan text, arriving in arbitrary chunks, into tasks.

Why not re-parse the buffer with a partial JSON parser on every chunk? That is quadratic: a 200-task
plan in 40-byte chunks re-reads ~27 KB hundreds of times. Instead this scanner walks each chunk once,
tracking only bracket nesting and string/escape state (jumping between interesting characters with
compiled regexes), remembers where the current task object began, and parses each finished object
exactly once (jiter, with a lenient `json` fallback). Chunks are scanned one at a time (no growing
buffer is kept); the pieces of the task in progress are joined only when it closes.

Accepted shapes, possibly surrounded by prose and/or ``` fences:
    {"tasks": [ {...}, ... ]}        or        [ {...}, ... ]
The objects that are elements of the tasks array are emitted (nested objects belong to their task).
A finished object that does not parse, or one cut off by the end of the stream or by a stray closing
bracket, is emitted as a `MalformedTask` carrying its raw text so the caller can heal it.
"""

from __future__ import annotations

import json
import re
from enum import Enum
from typing import Any

import jiter

from shared.providers.base import MalformedTask

PlanItem = dict[str, Any] | MalformedTask

# Next token outside strings: a whole string (one regex call), a bracket, or a lone quote that opens
# a string not finished in this chunk.
_TOKEN = re.compile(r'"[^"\\]*+(?:\\.[^"\\]*+)*+"|[{}\[\]"]', re.DOTALL)
# Text containing no bracket: whole strings and anything else outside strings (possessive, so an
# unterminated string at the end of a chunk never causes backtracking).
_SKIP = re.compile(r'(?:[^"{}\[\]]++|"[^"\\]*+(?:\\.[^"\\]*+)*+")*+', re.DOTALL)
# The longest run of string body: ordinary characters and complete escapes. A lone trailing
# backslash is left unmatched so the escape can be completed by the next chunk.
_STR_BODY = re.compile(r'[^"\\]*(?:\\.[^"\\]*)*', re.DOTALL)
# In prose: a character that might open the JSON document.
_OPENER = re.compile(r"[{\[]")
_WS = re.compile(r"[ \t\r\n]*")

_LENIENT = json.JSONDecoder(strict=False)
_OPENER_OF = {"}": "{", "]": "["}


class _Phase(Enum):
    SEEK = "seek"  # in prose, looking for the document's first bracket
    ROOT = "root"  # inside the root object, outside its tasks array
    TASKS = "tasks"  # inside the tasks array, between elements
    TASK = "task"  # inside one task object
    DONE = "done"  # the document closed; the rest is prose


class PlanStreamParser:
    """Feed chunks of plan text; get back each task the moment its JSON object closes.

    Work is O(total length): every character is looked at once (escapes split across chunks are
    carried over as state), and every task object is parsed once.
    """

    def __init__(self) -> None:
        self._phase = _Phase.SEEK
        self._candidate: str | None = None  # bracket seen in prose, awaiting its next character
        self._stack: list[str] = []  # open containers of the document
        self._tasks_depth = 0  # len(stack) while directly inside the tasks array
        self._found_tasks = False
        self._in_string = False
        self._escape = False  # a backslash ended the previous chunk inside a string
        self._key_pieces: list[str] | None = None  # raw text of a root-level string being read
        self._last_root_string = ""
        self._task_pieces: list[str] = []
        self._closed = False

    @property
    def found_tasks(self) -> bool:
        """Whether a tasks array was seen (distinguishes "empty plan" from "no JSON at all")."""
        return self._found_tasks

    def feed(self, chunk: str) -> list[PlanItem]:
        """Consume one chunk; return the tasks (or malformed fragments) completed by it, in order."""
        if self._closed:
            raise ValueError("feed() after close()")
        out: list[PlanItem] = []
        if chunk:
            self._scan(chunk, out)
        return out

    def close(self) -> list[PlanItem]:
        """End of stream: an unfinished task object comes back as a `MalformedTask`."""
        if self._closed:
            return []
        self._closed = True
        if self._phase is _Phase.TASK:
            raw = "".join(self._task_pieces)
            self._task_pieces = []
            self._phase = _Phase.DONE
            return [MalformedTask(raw=raw, error="unterminated task object: the stream ended inside it")]
        return []

    # -- scanning ---------------------------------------------------------------------------------

    def _scan(self, chunk: str, out: list[PlanItem]) -> None:
        n = len(chunk)
        pos = self._continue_string(chunk, 0) if self._in_string else 0
        task_start = 0  # where the current task's text begins in this chunk
        stack = self._stack
        skip = _SKIP.match
        task_phase = _Phase.TASK
        while pos < n:
            phase = self._phase
            if phase is _Phase.SEEK:
                pos = self._seek(chunk, pos)
                continue
            if phase is _Phase.DONE:
                return
            if phase is _Phase.ROOT and len(stack) == 1 and stack[0] == "{":
                # Root-object level: the last string read is the key of a following array.
                m = _TOKEN.search(chunk, pos)
                if m is None:
                    break
                i, pos = m.span()
                if pos - i > 1:
                    self._last_root_string = chunk[i + 1:pos - 1]
                    continue
                ch = chunk[i]
                if ch == '"':
                    self._in_string = True
                    self._key_pieces = []
                    pos = self._continue_string(chunk, pos)
                    continue
            else:
                # Elsewhere only brackets matter: one regex call skips whole strings and other text.
                i = skip(chunk, pos).end()  # type: ignore[union-attr]
                if i == n:
                    break
                ch = chunk[i]
                pos = i + 1
                if ch == '"':  # a string that runs past this chunk (or ends on a backslash in it)
                    self._in_string = True
                    self._key_pieces = None
                    pos = self._continue_string(chunk, pos)
                    continue
            if ch == "{" or ch == "[":
                if phase is _Phase.TASKS and ch == "{" and len(stack) == self._tasks_depth:
                    self._phase = task_phase
                    self._task_pieces = []
                    task_start = i
                elif phase is _Phase.ROOT and ch == "[" and len(stack) == 1 and stack[0] == "{" \
                        and self._last_root_string == "tasks" and not self._found_tasks:
                    self._phase = _Phase.TASKS
                    self._found_tasks = True
                    self._tasks_depth = 2
                stack.append(ch)
            elif phase is task_phase and len(stack) - 1 > self._tasks_depth and stack[-1] == _OPENER_OF[ch]:
                stack.pop()  # fast path: an inner container of the task closed
            else:
                self._close_bracket(ch, chunk, task_start, i, out)
        if self._phase is task_phase:
            self._task_pieces.append(chunk[task_start:])

    def _continue_string(self, chunk: str, pos: int) -> int:
        """Scan string body from `pos`; return the index after its closing quote, or len(chunk)."""
        n = len(chunk)
        seg_start = pos
        if self._escape:  # the escaped character is the first of this chunk
            self._escape = False
            pos += 1
        end = _STR_BODY.match(chunk, pos).end()  # type: ignore[union-attr]
        if end < n and chunk[end] == '"':
            self._in_string = False
            if self._key_pieces is not None:
                self._key_pieces.append(chunk[seg_start:end])
                self._last_root_string = "".join(self._key_pieces)
                self._key_pieces = None
            return end + 1
        # Either the chunk ran out, or it ends on a lone backslash.
        self._escape = end < n
        if self._key_pieces is not None:
            self._key_pieces.append(chunk[seg_start:])
        return n

    def _close_bracket(self, ch: str, chunk: str, task_start: int, i: int, out: list[PlanItem]) -> None:
        stack = self._stack
        opener = _OPENER_OF[ch]
        if stack and stack[-1] == opener:
            stack.pop()
        else:
            # A mismatched closer. Between tasks (or at the root) it is a stray: ignore it. Inside a
            # task it may close an outer container the task forgot to close: unwind to it.
            if self._phase is not _Phase.TASK or opener not in stack:
                return
            del stack[len(stack) - 1 - stack[::-1].index(opener):]
        depth = len(stack)
        if self._phase is _Phase.TASK and depth <= self._tasks_depth:
            if depth == self._tasks_depth and ch == "}":
                # The task's own closing brace (possibly after an unclosed inner container, in which
                # case the JSON will not parse and the whole object goes out as malformed).
                self._task_pieces.append(chunk[task_start:i + 1])
                out.append(_parse_task("".join(self._task_pieces)))
            else:
                self._task_pieces.append(chunk[task_start:i])
                out.append(MalformedTask(raw="".join(self._task_pieces),
                                         error=f"task object cut off by an unmatched {ch!r}"))
            self._task_pieces = []
            self._phase = _Phase.TASKS
        if self._phase is _Phase.TASKS and depth < self._tasks_depth:
            self._phase = _Phase.ROOT
        if depth == 0:
            # The document closed. Without a tasks array it was prose-like JSON: keep looking.
            self._phase = _Phase.DONE if self._found_tasks else _Phase.SEEK
            self._last_root_string = ""

    def _seek(self, chunk: str, pos: int) -> int:
        """In prose: find `[` followed by `{`, or `{` followed by `"` (whitespace allowed between)."""
        n = len(chunk)
        if self._candidate is not None:
            j = _WS.match(chunk, pos).end()  # type: ignore[union-attr]
            if j == n:
                return n
            nxt = chunk[j]
            cand, self._candidate = self._candidate, None
            if cand == "[" and nxt == "{":
                self._stack[:] = ["["]
                self._tasks_depth = 1
                self._found_tasks = True
                self._phase = _Phase.TASKS
            elif cand == "{" and nxt == '"':
                self._stack[:] = ["{"]
                self._phase = _Phase.ROOT
            return j  # `nxt` is examined again by the caller in the new phase
        m = _OPENER.search(chunk, pos)
        if m is None:
            return n
        self._candidate = m.group()
        return m.end()


def _parse_task(raw: str) -> PlanItem:
    """Parse one finished task object, once: jiter (fast), then the lenient stdlib decoder.

    The fallback accepts what jiter refuses but is harmless: raw newlines/tabs inside strings (LLMs
    write them) and lone surrogate escapes. Accepting them here saves a heal call.
    """
    try:
        value = jiter.from_json(raw.encode("utf-8", "surrogatepass"))
    except ValueError:
        try:
            value = _LENIENT.decode(raw)
        except ValueError as exc:
            return MalformedTask(raw=raw, error=f"invalid JSON: {exc}")
    if not isinstance(value, dict):  # pragma: no cover - text starting with { parses to a dict
        return MalformedTask(raw=raw, error="task is not a JSON object")
    return value


def parse_plan_text(text: str) -> list[PlanItem]:
    """Parse a complete plan text (the non-streaming path): same results as feeding it in chunks."""
    parser = PlanStreamParser()
    return parser.feed(text) + parser.close()
