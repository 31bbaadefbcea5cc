"""`kimi_mcp.prices`: the built-in table holds the published figures, costs follow the table, and a
user's table is validated into one-line errors (KIMI_PRICES refuses start-up with them)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from kimi_mcp.catalogue import CATALOGUE
from kimi_mcp.prices import (
    ModelPrice,
    PriceTable,
    PriceTableError,
    builtin_table,
    estimate_cost,
    format_usd,
    load_table,
    parse_table,
    prices_for,
)
from kimi_mcp.settings import Settings, SettingsError
from kimi_mcp.upstream import Usage

# Moonshot list prices, USD per 1M tokens: (input cache miss, input cache hit, output), from
# ../shared/reference/ace-kimi-api.md ("Prices", "Caching and prices").
PUBLISHED = {
    "kimi-k3": (3.00, 0.30, 15.00),
    "kimi-k3.1-pro": (2.00, 0.20, 10.00),
    "kimi-k3.1-pro-highspeed": (4.00, 0.20, 20.00),
    "kimi-k2.6": (0.95, 0.16, 4.00),
    "kimi-k2.5": (0.60, 0.10, 3.00),
    "kimi-k2-0905-preview": (0.60, 0.15, 2.50),
    "kimi-k2-thinking": (0.60, 0.15, 2.50),
    "kimi-k2-thinking-turbo": (1.15, 0.15, 8.00),
    "kimi-k2-turbo-preview": (1.15, 0.15, 8.00),
}
APPROXIMATE = {"kimi-k2.6", "kimi-k2-thinking", "kimi-k2-thinking-turbo", "kimi-k2-turbo-preview"}
"""The figures the reference gives as "about"."""

GOOD: dict[str, Any] = {"as_of": "2026-12-01", "source": "my invoice",
                        "models": {"kimi-k2.5": {"input_cache_miss": 1, "input_cache_hit": 0.5, "output": 2}}}


def test_the_built_in_table_holds_the_published_figures() -> None:
    table = builtin_table()
    assert {m: (p.input_cache_miss, p.input_cache_hit, p.output) for m, p in table.models.items()} == PUBLISHED
    assert {m for m, p in table.models.items() if p.approximate} == APPROXIMATE
    assert table.as_of and "Moonshot" in table.source and "Ace" in table.source
    assert table.describe()["unit"] == "USD per 1M tokens" and table.describe()["file"] is None


def test_every_priced_model_is_in_the_catalogue_and_the_rest_have_no_price() -> None:
    ids = {model.id for model in CATALOGUE}
    assert set(PUBLISHED) <= ids
    unpriced = ids - set(PUBLISHED)
    assert unpriced == {"kimi-k2.7-code", "kimi-k2.7-code-highspeed", "kimi-k2-instruct-0905", "kimi-k2-0711-preview"}
    for model in unpriced:
        assert estimate_cost(model, Usage(1000, 1000, 2000)) is None
    assert estimate_cost("kimi-next-preview", Usage(1, 1, 2)) is None


def test_cached_tokens_at_the_hit_price_the_rest_at_the_miss_price() -> None:
    usage = Usage(prompt_tokens=1_000_000, completion_tokens=100_000, total_tokens=1_100_000,
                  reasoning_tokens=30_000, cached_tokens=400_000)
    # reasoning tokens are part of completion_tokens: not charged again
    assert estimate_cost("kimi-k2.5", usage) == pytest.approx(0.6 * 0.60 + 0.4 * 0.10 + 0.1 * 3.00)
    assert estimate_cost("kimi-k3", usage) == pytest.approx(0.6 * 3.00 + 0.4 * 0.30 + 0.1 * 15.00)


def test_unreported_cache_counts_as_all_miss_and_odd_counts_are_bounded() -> None:
    k3 = builtin_table().models["kimi-k3"]
    assert k3.cost(Usage(2_000, 1_000, 3_000)) == pytest.approx((2_000 * 3.00 + 1_000 * 15.00) / 1e6)
    # more cached than prompt tokens (an upstream oddity): never a negative miss count
    assert k3.cost(Usage(100, 0, 100, cached_tokens=500)) == pytest.approx(100 * 0.30 / 1e6)
    assert k3.cost(Usage()) == 0.0


def test_a_given_table_is_used_instead_of_the_built_in_one() -> None:
    mine = PriceTable("today", "mine", {"kimi-k3": ModelPrice(1.0, 0.5, 2.0)})
    usage = Usage(1_000_000, 1_000_000, 2_000_000, cached_tokens=500_000)
    assert estimate_cost("kimi-k3", usage, mine) == pytest.approx(0.5 + 0.25 + 2.0)
    assert estimate_cost("kimi-k2.5", usage, mine) is None


@pytest.mark.parametrize(("data", "complaint"), [
    ([], "JSON object"),
    ({"source": "x", "models": {}}, "'as_of'"),
    ({"as_of": "x", "source": " ", "models": {}}, "'source'"),
    ({"as_of": "x", "source": "x"}, "'models'"),
    ({"as_of": "x", "source": "x", "models": []}, "'models'"),
    ({"as_of": "x", "source": "x", "models": {}, "currency": "EUR"}, "unknown key(s) 'currency'"),
    ({"as_of": "x", "source": "x", "models": {}, "unit": "EUR per token"}, "'unit'"),
    ({"as_of": "x", "source": "x", "models": {"m": 3}}, "models['m'] must be an object"),
    ({"as_of": "x", "source": "x", "models": {"m": {"input_cache_miss": 1, "output": 1}}},
     "models['m']: missing input_cache_hit"),
    ({"as_of": "x", "source": "x", "models": {"m": {"input_cache_mis": 1, "input_cache_hit": 1, "output": 1}}},
     "unknown key(s) input_cache_mis"),
    ({"as_of": "x", "source": "x", "models": {"m": {"input_cache_miss": -1, "input_cache_hit": 1, "output": 1}}},
     "models['m'].input_cache_miss must be a non-negative number"),
    ({"as_of": "x", "source": "x", "models": {"m": {"input_cache_miss": "1", "input_cache_hit": 1, "output": 1}}},
     "input_cache_miss must be a non-negative number"),
    ({"as_of": "x", "source": "x", "models": {"m": {"input_cache_miss": 1, "input_cache_hit": True, "output": 1}}},
     "input_cache_hit must be a non-negative number"),
    ({"as_of": "x", "source": "x", "models": {"m": {"input_cache_miss": 1, "input_cache_hit": 1,
                                                     "output": float("inf")}}}, "output must be"),
    ({"as_of": "x", "source": "x", "models": {"m": {"input_cache_miss": 1, "input_cache_hit": 1, "output": 1,
                                                     "approximate": "yes"}}}, "approximate must be true or false"),
])
def test_a_malformed_table_is_one_line_naming_the_problem(data: Any, complaint: str) -> None:
    with pytest.raises(PriceTableError) as caught:
        parse_table(data)
    assert complaint in str(caught.value)
    assert "\n" not in str(caught.value)


def test_a_table_file_is_read(tmp_path: Path) -> None:
    path = tmp_path / "prices.json"
    path.write_text(json.dumps(GOOD))
    table = load_table(path)
    assert (table.as_of, table.source, table.path) == ("2026-12-01", "my invoice", str(path))
    assert table.models == {"kimi-k2.5": ModelPrice(1.0, 0.5, 2.0)}


@pytest.mark.parametrize(("content", "complaint"), [
    (None, "cannot read"),
    (b"{not json", "is not valid JSON"),
    (b"\xff\xfe{}", "is not valid JSON"),
    (b" " * (1 << 20) + b"{}", "not a price table"),
    (json.dumps({**GOOD, "models": {"m": {}}}).encode(), "models['m']: missing"),
])
def test_an_unusable_file_is_one_line_naming_the_file(tmp_path: Path, content: bytes | None, complaint: str) -> None:
    path = tmp_path / "prices.json"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(PriceTableError) as caught:
        load_table(path)
    message = str(caught.value)
    assert complaint in message and str(path) in message and "\n" not in message


def test_prices_for_reads_kimi_prices_or_refuses_it(tmp_path: Path) -> None:
    assert prices_for(Settings()) is builtin_table()
    path = tmp_path / "prices.json"
    path.write_text(json.dumps(GOOD))
    assert prices_for(Settings.load({"KIMI_PRICES": str(path)})).source == "my invoice"
    with pytest.raises(SettingsError, match=r"^invalid setting KIMI_PRICES: cannot read .*missing\.json"):
        prices_for(Settings.load({"KIMI_PRICES": str(tmp_path / "missing.json")}))
    path.write_text("[]")
    with pytest.raises(SettingsError, match=r"invalid setting KIMI_PRICES: .* must be a JSON object"):
        prices_for(Settings(prices=str(path)))


def test_format_usd_shows_small_costs_with_enough_digits() -> None:
    assert format_usd(12.345) == "$12.35"
    assert format_usd(0.0123) == "$0.0123"
    assert format_usd(0.000061) == "$0.000061"
    assert format_usd(0) == "$0.000000"
