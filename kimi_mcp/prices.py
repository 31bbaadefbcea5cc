"""Prices: what a call's tokens are estimated to cost, from a table that is data.

Ace publishes no Kimi prices, so the built-in table (`prices.json`, shipped in the package) holds
Moonshot's list prices with their date and source, and an operator may point KIMI_PRICES at their
own table (same format) instead. Every figure is an estimate, never a bill. Imports only the
standard library and `settings`, so any layer may ask what a call cost.

Format: {"as_of": "<when the figures were gathered>", "source": "...", "unit": "USD per 1M tokens" (optional),
"models": {"<id>": {"input_cache_miss": n, "input_cache_hit": n, "output": n, "approximate": bool}}}.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any, Protocol

from .settings import Settings, SettingsError

__all__ = ["ModelPrice", "PriceTable", "PriceTableError", "TokenCounts", "builtin_table", "estimate_cost",
           "format_usd", "load_table", "parse_table", "prices_for"]

UNIT = "USD per 1M tokens"
_PER = 1_000_000
_TOP_KEYS = {"as_of", "source", "unit", "models"}
_PRICE_KEYS = ("input_cache_miss", "input_cache_hit", "output")
_MODEL_KEYS = {*_PRICE_KEYS, "approximate"}
_MAX_BYTES = 1 << 20
"""A price table is a few kilobytes; a larger file is a wrong path, not a table."""


class PriceTableError(ValueError):
    """A price table that cannot be used: unreadable, not JSON, or not the format above."""


class TokenCounts(Protocol):
    """What a cost is computed from; `kimi_mcp.upstream.Usage` has this shape (this module imports
    no other layer, so it names the shape instead of the class)."""

    @property
    def prompt_tokens(self) -> int: ...
    @property
    def completion_tokens(self) -> int: ...
    @property
    def cached_tokens(self) -> int | None: ...


@dataclass(frozen=True, slots=True)
class ModelPrice:
    """One model's prices, USD per 1M tokens; `approximate`: the source gives the figure as "about"."""

    input_cache_miss: float
    input_cache_hit: float
    output: float
    approximate: bool = False

    def cost(self, usage: TokenCounts) -> float:
        """Cached prompt tokens at the hit price, the rest at the miss price, completion tokens
        (which include the reasoning tokens upstream) at the output price."""
        prompt = max(usage.prompt_tokens, 0)
        hit = min(max(usage.cached_tokens or 0, 0), prompt)
        total = ((prompt - hit) * self.input_cache_miss + hit * self.input_cache_hit
                 + max(usage.completion_tokens, 0) * self.output)
        return round(total / _PER, 10)


@dataclass(frozen=True, slots=True)
class PriceTable:
    """A whole table: its prices by model id, and where and when the figures come from."""

    as_of: str
    source: str
    models: Mapping[str, ModelPrice]
    path: str = ""
    """The file it was read from ("" for the built-in table)."""

    def get(self, model: str) -> ModelPrice | None:
        return self.models.get(model)

    def estimate(self, model: str, usage: TokenCounts) -> float | None:
        """The estimated cost in USD, or None for a model this table has no prices for."""
        price = self.models.get(model)
        return None if price is None else price.cost(usage)

    def describe(self) -> dict[str, Any]:
        """Where the figures come from, for a result or `doctor`."""
        return {"as_of": self.as_of, "source": self.source, "unit": UNIT, "file": self.path or None,
                "models": sorted(self.models)}


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
        raise PriceTableError(f"{where} must be a non-negative number, not {value!r}")
    return float(value)


def _text(data: Mapping[str, Any], key: str) -> str:
    value = data.get(key)
    if not isinstance(value, str) or not value.strip():
        raise PriceTableError(f"{key!r} must be a non-empty string (when and where the figures come from)")
    return value.strip()


def parse_table(data: Any, path: str = "") -> PriceTable:
    """A table from parsed JSON, validated: every problem is one `PriceTableError` line naming the key."""
    if not isinstance(data, dict):
        raise PriceTableError("a price table must be a JSON object with 'as_of', 'source' and 'models'")
    unknown = sorted(set(data) - _TOP_KEYS)
    if unknown:
        allowed = ", ".join(sorted(_TOP_KEYS))
        raise PriceTableError(f"unknown key(s) {', '.join(map(repr, unknown))} (allowed: {allowed})")
    if "unit" in data and data["unit"] != UNIT:
        raise PriceTableError(f"'unit' must be {UNIT!r} (prices are per million tokens, in US dollars)")
    models = data.get("models")
    if not isinstance(models, dict):
        raise PriceTableError("'models' must be an object: model id -> prices")
    parsed: dict[str, ModelPrice] = {}
    for model_id, row in models.items():
        where = f"models[{model_id!r}]"
        if not model_id.strip():
            raise PriceTableError("a model id in 'models' is empty")
        if not isinstance(row, dict):
            raise PriceTableError(f"{where} must be an object with {', '.join(_PRICE_KEYS)}")
        extra = sorted(set(row) - _MODEL_KEYS)
        missing = [key for key in _PRICE_KEYS if key not in row]
        if extra or missing:
            problem = f"unknown key(s) {', '.join(extra)}" if extra else f"missing {', '.join(missing)}"
            raise PriceTableError(f"{where}: {problem} (keys: {', '.join(_PRICE_KEYS)}, optional approximate)")
        approximate = row.get("approximate", False)
        if not isinstance(approximate, bool):
            raise PriceTableError(f"{where}.approximate must be true or false")
        miss, hit, output = (_number(row[key], f"{where}.{key}") for key in _PRICE_KEYS)
        parsed[model_id] = ModelPrice(miss, hit, output, approximate)
    return PriceTable(_text(data, "as_of"), _text(data, "source"), parsed, path)


def load_table(path: str | Path) -> PriceTable:
    """A user's table from a JSON file; unreadable or malformed is a `PriceTableError`, one line."""
    file = Path(path).expanduser()
    try:
        with file.open("rb") as handle:
            raw = handle.read(_MAX_BYTES + 1)
    except OSError as exc:
        raise PriceTableError(f"cannot read {str(file)!r}: {exc.strerror or exc}") from None
    if len(raw) > _MAX_BYTES:
        raise PriceTableError(f"{str(file)!r} is over {_MAX_BYTES} bytes: not a price table")
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PriceTableError(f"{str(file)!r} is not valid JSON: {exc}") from None
    try:
        return parse_table(data, str(file))
    except PriceTableError as exc:
        raise PriceTableError(f"{str(file)!r}: {exc}") from None


@cache
def builtin_table() -> PriceTable:
    """The shipped table (Moonshot list prices), read once."""
    text = resources.files(__package__ or "kimi_mcp").joinpath("prices.json").read_text("utf-8")
    return parse_table(json.loads(text))


def estimate_cost(model: str, usage: TokenCounts, table: PriceTable | None = None) -> float | None:
    """Estimated USD cost of one call's usage on `model` (None: no prices for it).

    `table` is the process's table (`Runtime.prices`, the operator's KIMI_PRICES file when set);
    without it the built-in table is used, so pass it wherever the runtime is at hand.
    """
    return (table or builtin_table()).estimate(model, usage)


def prices_for(settings: Settings) -> PriceTable:
    """The table these settings give: the KIMI_PRICES file (it replaces the built-in table whole, so
    every figure has the one source it names), else the built-in one. An unusable file is a
    SettingsError: start-up stops with one line."""
    if not settings.prices:
        return builtin_table()
    try:
        return load_table(settings.prices)
    except PriceTableError as exc:
        raise SettingsError(f"invalid setting KIMI_PRICES: {exc}") from None


def format_usd(value: float) -> str:
    """A cost for a reader: cents for whole calls, more digits for the tiny costs of short ones."""
    return f"${value:,.2f}" if value >= 1 else f"${value:.4f}" if value >= 0.01 else f"${value:.6f}"
