"""What the HTTP vendors (Anthropic, OpenAI-compatible) share: the retry loop, the call deadline,
the plan stream fed through `PlanStreamParser`, and transforms parsed with `parse_files`.

A vendor adapter only implements `_texts`: one attempt of one streamed call, yielding text deltas,
recording usage, and turning its vendor's errors into `AttemptFailed`.

Why the plan stream is never retried once a task has been yielded: the caller has already shown
those tasks to the user (plan_partial events); a second stream could differ, so a late failure is
raised instead of silently splicing two plans.
"""

from __future__ import annotations

import threading
from abc import abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from shared.models.plan import Usage
from shared.observability import count, logger
from shared.providers.base import (
    AIProvider,
    MalformedTask,
    PlanContext,
    PlanStream,
    ProviderError,
    ProviderTimeout,
    Spend,
    TaskContext,
    TransformKind,
    TransformResult,
)
from shared.providers.pricing import cost_usd
from shared.providers.prompts import Prompt, parse_files, plan_prompt, task_prompt
from shared.providers.retry import AttemptFailed, RetryPolicy
from shared.providers.streaming import PlanStreamParser

DEFAULT_PLAN_DEADLINE_S = 240.0


@dataclass
class UsageCounter:
    """Token counts as the vendor reports them, summed over attempts. `input` excludes cache reads
    and writes (the pricing convention). `reported` stays False when the server sent no usage, and
    then the cost is unknown (None), not zero."""

    model: str
    input: int = 0
    output: int = 0
    cache_read: int = 0
    cache_write: int = 0
    reported: bool = False
    spend: Spend | None = None  # told every report, so a call cut short still counts
    _base: tuple[int, int, int, int] = field(default=(0, 0, 0, 0), repr=False)

    def begin_attempt(self) -> None:
        """Counts reported from now on are this attempt's; earlier attempts' counts are kept."""
        self._base = (self.input, self.output, self.cache_read, self.cache_write)

    def set_attempt(self, *, input: int | None = None, output: int | None = None,
                    cache_read: int | None = None, cache_write: int | None = None, final: bool = False) -> None:
        """This attempt's cumulative counts as the vendor reports them (None: not reported);
        `final`: the vendor's closing count, not a running one."""
        self.reported = True
        b_in, b_out, b_read, b_write = self._base
        if input is not None:
            self.input = b_in + input
        if output is not None:
            self.output = b_out + output
        if cache_read is not None:
            self.cache_read = b_read + cache_read
        if cache_write is not None:
            self.cache_write = b_write + cache_write
        if self.spend is not None:
            self.spend.model = self.model
            self.spend.report(self.usage())
            if final:
                self.spend.ended()

    def usage(self) -> Usage:
        cost = (cost_usd(self.model, self.input, self.output, self.cache_read, self.cache_write)
                if self.reported else None)
        return Usage(
            promptTokens=self.input + self.cache_read + self.cache_write,
            completionTokens=self.output,
            costUsd=cost,
            cacheReadTokens=self.cache_read,
            cacheWriteTokens=self.cache_write,
        )


@dataclass
class Call:
    """One logical call (all its attempts): the prompt, when it must end, how to stop it early."""

    prompt: Prompt
    deadline: float  # on the policy's clock
    cancel: threading.Event | None
    counter: UsageCounter
    purpose: str  # "plan" or the transform kind, for logs and metrics
    attempts: int = 0

    def check(self, now: float) -> None:
        """Called between stream events: stop at the deadline or on cancellation."""
        if self.cancel is not None and self.cancel.is_set():
            raise AttemptFailed(ProviderError("the call was cancelled", retryable=False), retry=False)
        if now > self.deadline:
            raise AttemptFailed(ProviderTimeout("the provider did not finish within the deadline"),
                                retry=False)


class VendorProvider(AIProvider):
    """Base for HTTP vendors. Subclasses set `name`, `model` and implement `_texts`."""

    def __init__(self, *, retry: RetryPolicy | None = None,
                 plan_deadline_s: float = DEFAULT_PLAN_DEADLINE_S) -> None:
        self.retry = retry or RetryPolicy()
        self.plan_deadline_s = plan_deadline_s

    @abstractmethod
    def _texts(self, call: Call) -> Iterator[str]:
        """One attempt: stream the reply's text deltas, updating `call.counter`; raise AttemptFailed."""

    # -- the protocol ---------------------------------------------------------------------------

    def plan_stream(self, prompt: str, context: PlanContext) -> PlanStream:
        return VendorPlanStream(self, plan_prompt(prompt, context))

    def transform(self, kind: TransformKind, input: dict[str, Any], context: TaskContext) -> TransformResult:
        try:
            prompt = task_prompt(kind, input, context)  # heal_json gets the heal prompt
        except ValueError as exc:
            raise ProviderError(str(exc), retryable=False) from None
        call = self.new_call(prompt, context.deadline_s, context.cancel, kind.value, context.spend)
        text = self.complete(call)
        usage = context.spend.usage()  # what the vendor reported, else an estimate marked as such
        if kind is TransformKind.heal_json:
            return TransformResult(text=text, usage=usage)
        files = parse_files(text)
        if not files:
            # Retryable: a second attempt is told to follow the format exactly.
            raise ProviderError("the reply contained no usable <file> block", retryable=True)
        return TransformResult(files=files, usage=usage)

    # -- the retry loop -------------------------------------------------------------------------

    def new_call(self, prompt: Prompt, budget_s: float, cancel: threading.Event | None, purpose: str,
                 spend: Spend | None = None) -> Call:
        if spend is not None:
            spend.model = spend.model or self.model
        return Call(prompt=prompt, deadline=self.retry.clock() + budget_s, cancel=cancel,
                    counter=UsageCounter(model=self.model, spend=spend), purpose=purpose)

    def complete(self, call: Call) -> str:
        """The whole reply text; every failed attempt may be retried since nothing was handed out."""
        while True:
            parts: list[str] = []
            try:
                for text in self._attempt(call):
                    parts.append(text)
                return "".join(parts)
            except AttemptFailed as failure:
                self._after_failure(call, failure)

    def _attempt(self, call: Call) -> Iterator[str]:
        call.attempts += 1
        call.counter.begin_attempt()
        if call.attempts > 1:
            count("provider.retries")
        now = self.retry.clock()
        if now >= call.deadline:
            raise AttemptFailed(ProviderTimeout("no time left for the provider call"), retry=False)
        call.check(now)  # cancelled while waiting to retry: do not send another request
        return self._metered(call, self._texts(call))

    @staticmethod
    def _metered(call: Call, texts: Iterator[str]) -> Iterator[str]:
        """The attempt's text, counted into the call's Spend: a reply that started is a billed
        request, whether or not its usage report ever arrives."""
        spend = call.counter.spend
        first = True
        try:
            for text in texts:
                if spend is not None:
                    if first:
                        spend.sent(len(call.prompt.system) + len(call.prompt.user))
                        first = False
                    spend.received(len(text))
                yield text
        finally:
            close = getattr(texts, "close", None)
            if close is not None:
                close()

    def _after_failure(self, call: Call, failure: AttemptFailed) -> None:
        """Wait and return to retry, or raise the failure's error."""
        log = {"provider": self.name, "purpose": call.purpose, "attempt": call.attempts,
               "error": str(failure.error), "retryAfter": failure.retry_after}
        if failure.retry and self.retry.wait_before_retry(call.attempts, failure.retry_after, call.deadline):
            logger.info("provider call failed, retrying", extra=log)
            return
        logger.warning("provider call failed", extra=log)
        raise failure.error from failure.__cause__


class VendorPlanStream(PlanStream):
    """Iterating runs the call: tasks come out as their JSON objects close in the vendor's stream."""

    def __init__(self, provider: VendorProvider, prompt: Prompt) -> None:
        super().__init__()
        self._provider = provider
        self._prompt = prompt
        self.attempts = 0

    def __iter__(self) -> Iterator[dict[str, Any] | MalformedTask]:
        provider = self._provider
        spend = Spend(provider.model)
        call = provider.new_call(self._prompt, provider.plan_deadline_s, None, "plan", spend)
        try:
            while True:
                parser = PlanStreamParser()
                yielded = False
                texts: Iterator[str] | None = None
                try:
                    texts = provider._attempt(call)
                    for text in texts:
                        for item in self._each(parser.feed(text)):
                            yielded = True
                            yield item
                except AttemptFailed as failure:
                    if yielded:  # tasks already shown: do not splice a second stream onto them
                        failure.retry = False
                    provider._after_failure(call, failure)
                    continue
                finally:
                    close = getattr(texts, "close", None)  # stop the HTTP stream if we stop early
                    if close is not None:
                        close()
                # The stream ended: a cut-off final object (stop_reason max_tokens, a dropped
                # connection) comes out as a MalformedTask so the caller can heal it.
                yield from self._each(parser.close())
                if not parser.found_tasks:
                    logger.warning("the plan reply contained no tasks array",
                                   extra={"provider": provider.name})
                return
        finally:
            self.attempts = call.attempts
            self.usage = spend.usage()
