"""Pricing: known models are priced from their family entry; unknown ones are never guessed."""

from __future__ import annotations

import re

import pytest

from shared.providers.pricing import PRICES, cost_usd, price_for


@pytest.mark.parametrize(
    ("model", "family"),
    [
        ("claude-sonnet-4-5", "claude-sonnet-4-5"),
        ("claude-sonnet-4-5-20250929", "claude-sonnet-4-5"),
        ("claude-sonnet-4-20250514", "claude-sonnet-4"),
        ("claude-opus-4-1-20250805", "claude-opus-4-1"),
        ("claude-opus-4-5-20251101", "claude-opus-4-5"),
        ("claude-opus-4-20250514", "claude-opus-4"),
        ("claude-haiku-4-5-20251001", "claude-haiku-4-5"),
        ("claude-3-5-haiku-latest", "claude-3-5-haiku"),
        ("claude-3-5-haiku-20241022", "claude-3-5-haiku"),
        ("us.anthropic.claude-3-5-haiku-20241022-v1:0", "claude-3-5-haiku"),
        ("claude-3-7-sonnet@20250219", "claude-3-7-sonnet"),
        ("gpt-4o", "gpt-4o"),
        ("gpt-4o-2024-08-06", "gpt-4o"),
        ("gpt-4o-2024-05-13", "gpt-4o-2024-05-13"),
        ("gpt-4o-mini-2024-07-18", "gpt-4o-mini"),
        ("gpt-4.1-mini", "gpt-4.1-mini"),
        ("gpt-4.1-nano-2025-04-14", "gpt-4.1-nano"),
        ("mock", "mock"),
        ("mock-planner", "mock"),
    ],
)
def test_model_ids_resolve_to_their_family(model: str, family: str) -> None:
    assert price_for(model) is PRICES[family]


@pytest.mark.parametrize(
    "model",
    ["claude-opus-4-6", "claude-sonnet-5", "gpt-4o-audio-preview", "gpt-4.1-large", "gpt-5",
     "llama-3-70b", "", "mockery", "claude-sonnet-4-5x"],
)
def test_unknown_models_are_not_priced(model: str) -> None:
    assert price_for(model) is None
    assert cost_usd(model, 1000, 1000) is None


def test_cost_uses_each_rate() -> None:
    # Sonnet 4.5: $3 in, $15 out, $0.30 cache read, $3.75 cache write per million.
    cost = cost_usd("claude-sonnet-4-5-20250929", 100_000, 10_000, 50_000, 40_000)
    assert cost == pytest.approx(0.3 + 0.15 + 0.015 + 0.15)


def test_openai_cache_reads_have_their_own_rate_and_writes_cost_base_input() -> None:
    assert cost_usd("gpt-4o-mini", 1_000_000, 1_000_000, 1_000_000) == pytest.approx(0.15 + 0.60 + 0.075)
    assert cost_usd("gpt-4.1", 0, 0, 0, 1_000_000) == pytest.approx(2.0)


def test_long_context_sonnet_requests_use_the_higher_rates() -> None:
    at_threshold = cost_usd("claude-sonnet-4-5", 200_000, 0)
    over = cost_usd("claude-sonnet-4-5", 150_000, 1_000_000, cache_read_tokens=60_000)
    assert at_threshold == pytest.approx(0.6)
    assert over == pytest.approx(150_000 * 6 / 1e6 + 22.5 + 60_000 * 0.6 / 1e6)


def test_mock_is_free_and_zero_tokens_cost_zero() -> None:
    assert cost_usd("mock", 10_000, 10_000, 5, 5) == 0.0
    assert cost_usd("claude-haiku-4-5", 0, 0) == 0.0


def test_every_entry_says_where_and_when_its_price_came_from() -> None:
    for name, price in PRICES.items():
        assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", price.as_of), name
        assert price.source, name
        if name.startswith("claude"):
            assert "Anthropic pricing page" in price.source
        if name.startswith("gpt"):
            assert "OpenAI" in price.source
        assert price.input >= 0 and price.output >= price.input * 0.99
