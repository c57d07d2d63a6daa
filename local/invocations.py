"""What the Lambda service does at a function's time limit, done for the local runtime.

A handler still running at its function's timeout is abandoned: its caller stops waiting (a queue's
messages stay in flight until their visibility runs out; Step Functions gets `Sandbox.Timedout`),
and, as the frozen sandbox on AWS would, it reaches no AWS service any more: every call it or a
thread it started makes from then on raises `InvocationKilled`. Python cannot stop a thread, so the
guard sits where the handler's effects leave the process: botocore's `before-call`.

Tests use the same switch to kill an invocation at any chosen point (`Invocation.kill`).
"""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from shared.dal.aws import add_client_hook


class InvocationKilled(BaseException):
    """The invocation was stopped (time limit, or a crash a test injected): nothing it does reaches
    AWS. A BaseException, so no handler's `except Exception` takes it for an error to handle."""


@dataclass
class Invocation:
    name: str
    killed: threading.Event = field(default_factory=threading.Event)

    def kill(self) -> None:
        self.killed.set()


current: contextvars.ContextVar[Invocation | None] = contextvars.ContextVar("stepwise_invocation", default=None)


def _guard(**_: Any) -> None:
    invocation = current.get()
    if invocation is not None and invocation.killed.is_set():
        raise InvocationKilled(f"{invocation.name} was stopped; this call never left it")


def _install(client: Any) -> None:
    client.meta.events.register("before-call", _guard)


def install() -> None:
    """Guard every boto3 client of this process (idempotent)."""
    add_client_hook(_install)


@dataclass
class Outcome:
    result: Any = None
    error: BaseException | None = None
    timed_out: bool = False


def invoke(handler: Callable[[Any, Any], Any], event: Any, context: Any, timeout_s: float) -> Outcome:
    """Run `handler(event, context)` as one invocation, abandoned (and killed) at `timeout_s`."""
    invocation = Invocation(getattr(context, "function_name", "function"))
    outcome = Outcome()

    def run() -> None:
        current.set(invocation)
        try:
            outcome.result = handler(event, context)
        except BaseException as exc:  # reported to the caller, as the Lambda service would
            outcome.error = exc

    thread = threading.Thread(target=run, name=f"{invocation.name}-invocation", daemon=True)
    thread.start()
    thread.join(timeout_s)
    if thread.is_alive():
        invocation.kill()
        outcome.timed_out = True
    return outcome
