"""Model prices, per million tokens, and the cost of one call.

Why a table with dates and sources: a cost figure is only as good as the price behind it, and prices
change. Each entry records where it came from and when it was known to hold, so a reviewer can
re-check it. An unknown model gets no price (`None`), never a neighbour's price: a wrong cost is worse
than a missing one.

Token convention for `cost_usd`: `prompt_tokens` are input tokens billed at the base input rate,
i.e. *excluding* cache reads and cache writes (Anthropic reports them that way; for OpenAI subtract
`prompt_tokens_details.cached_tokens` from `prompt_tokens` first).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_ANTHROPIC_SOURCE = "Anthropic pricing page (docs.anthropic.com/en/docs/about-claude/pricing)"
_OPENAI_SOURCE = "OpenAI API pricing page (platform.openai.com/docs/pricing)"
_ANTHROPIC_AS_OF = "2025-11-24"
_OPENAI_AS_OF = "2025-11-24"


@dataclass(frozen=True)
class Price:
    """USD per million tokens. `cache_write` is None where the vendor has no cache-write charge
    (then cache writes cost the base input rate). Above `long_context_threshold` input tokens the
    whole request is billed at the `long_*` rates (Anthropic's 1M-context Sonnet pricing)."""

    input: float
    output: float
    cache_read: float
    cache_write: float | None
    as_of: str
    source: str
    long_context_threshold: int | None = None
    long_input: float | None = None
    long_output: float | None = None
    long_cache_read: float | None = None
    long_cache_write: float | None = None


def _anthropic(inp: float, out: float, read: float, write: float, *, long_context: bool = False) -> Price:
    if not long_context:
        return Price(inp, out, read, write, _ANTHROPIC_AS_OF, _ANTHROPIC_SOURCE)
    # Sonnet 4/4.5 with the 1M context window: a request over 200K input tokens costs 2x input
    # (and cache) rates and 1.5x output.
    return Price(inp, out, read, write, _ANTHROPIC_AS_OF, _ANTHROPIC_SOURCE,
                 long_context_threshold=200_000, long_input=inp * 2, long_output=out * 1.5,
                 long_cache_read=read * 2, long_cache_write=write * 2)


def _openai(inp: float, out: float, cached: float) -> Price:
    return Price(inp, out, cached, None, _OPENAI_AS_OF, _OPENAI_SOURCE)


# Keys are model ids or their family alias; see `_SUFFIX` for what may follow a key.
PRICES: dict[str, Price] = {
    # Anthropic: cache write = 5-minute ephemeral cache (1.25x input); cache read = 0.1x input.
    "claude-opus-4-5": _anthropic(5.0, 25.0, 0.50, 6.25),
    "claude-opus-4-1": _anthropic(15.0, 75.0, 1.50, 18.75),
    "claude-opus-4-0": _anthropic(15.0, 75.0, 1.50, 18.75),
    "claude-opus-4": _anthropic(15.0, 75.0, 1.50, 18.75),  # claude-opus-4-20250514
    "claude-sonnet-4-5": _anthropic(3.0, 15.0, 0.30, 3.75, long_context=True),
    "claude-sonnet-4-0": _anthropic(3.0, 15.0, 0.30, 3.75, long_context=True),
    "claude-sonnet-4": _anthropic(3.0, 15.0, 0.30, 3.75, long_context=True),  # claude-sonnet-4-20250514
    "claude-haiku-4-5": _anthropic(1.0, 5.0, 0.10, 1.25),
    "claude-3-7-sonnet": _anthropic(3.0, 15.0, 0.30, 3.75),
    "claude-3-5-sonnet": _anthropic(3.0, 15.0, 0.30, 3.75),
    "claude-3-5-haiku": _anthropic(0.80, 4.0, 0.08, 1.0),
    "claude-3-opus": _anthropic(15.0, 75.0, 1.50, 18.75),
    "claude-3-haiku": _anthropic(0.25, 1.25, 0.03, 0.30),
    # OpenAI: cached input is billed at the cached rate; there is no cache-write charge.
    "gpt-4o": _openai(2.50, 10.0, 1.25),
    "gpt-4o-2024-05-13": _openai(5.0, 15.0, 5.0),  # the first snapshot: older price, no caching
    "gpt-4o-mini": _openai(0.15, 0.60, 0.075),
    "gpt-4.1": _openai(2.0, 8.0, 0.50),
    "gpt-4.1-mini": _openai(0.40, 1.60, 0.10),
    "gpt-4.1-nano": _openai(0.10, 0.40, 0.025),
    # The mock provider: free by definition, whatever suffix it carries.
    "mock": Price(0.0, 0.0, 0.0, 0.0, "2025-11-24", "Stepwise mock provider (no vendor)"),
}

# What may follow a table key and still be the same model: a date snapshot (Anthropic `-20250929`,
# OpenAI `-2024-08-06`), `-latest`, or a Bedrock version tag (`-v1:0`). Anything else (`-mini`,
# `-4-6`) is a different model, so it is not priced by its prefix.
_SUFFIX = re.compile(r"(?:-\d{8}|-\d{4}-\d{2}-\d{2}|-latest)?(?:-v\d+(?::\d+)?)?")
# Bedrock and Vertex spell the same models with a vendor (and region) prefix or an @ before the date.
_VENDOR_PREFIX = re.compile(r"^(?:[a-z-]{2,6}\.)?(?:anthropic|openai)[./]")
_ANY_SUFFIX = frozenset({"mock"})


def price_for(model: str) -> Price | None:
    """The price entry for `model`, matching the longest key it extends by a recognised suffix."""
    name = _VENDOR_PREFIX.sub("", model.strip().lower()).replace("@", "-")
    best: str | None = None
    for key in PRICES:
        if not name.startswith(key) or (best is not None and len(key) <= len(best)):
            continue
        rest = name[len(key):]
        if _SUFFIX.fullmatch(rest) or (key in _ANY_SUFFIX and (rest == "" or rest.startswith("-"))):
            best = key
    return PRICES[best] if best is not None else None


def cost_usd(
    model: str,
    prompt_tokens: int,
    completion_tokens: int,
    cache_read_tokens: int = 0,
    cache_write_tokens: int = 0,
) -> float | None:
    """USD cost of one call, or None when the model's price is unknown (never a guess)."""
    price = price_for(model)
    if price is None:
        return None
    rates = (price.input, price.output, price.cache_read,
             price.input if price.cache_write is None else price.cache_write)
    total_input = prompt_tokens + cache_read_tokens + cache_write_tokens
    if price.long_context_threshold is not None and total_input > price.long_context_threshold:
        rates = (
            price.long_input if price.long_input is not None else rates[0],
            price.long_output if price.long_output is not None else rates[1],
            price.long_cache_read if price.long_cache_read is not None else rates[2],
            price.long_cache_write if price.long_cache_write is not None else rates[3],
        )
    tokens = (prompt_tokens, completion_tokens, cache_read_tokens, cache_write_tokens)
    return sum(t * r for t, r in zip(tokens, rates, strict=True)) / 1_000_000
