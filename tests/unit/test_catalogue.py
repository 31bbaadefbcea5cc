"""`kimi_mcp.catalogue`: the model rows (ids, context windows), extra models from settings, whether a
model thinks for a given switch, and the sampling rules with how they are shown."""

from __future__ import annotations

import pytest

from kimi_mcp.catalogue import CATALOGUE, Catalogue, SamplingRule
from tests.support.models import ALL_IDS
from tests.unit.samples import model


class TestCatalogue:
    def test_all_models_present(self) -> None:
        assert Catalogue(CATALOGUE).ids == ALL_IDS
        assert model("kimi-k2-0711-preview").context_window == 131_072
        assert model("kimi-k2.5").context_window == 262_144

    def test_extra_models(self) -> None:
        cat = Catalogue(CATALOGUE, ["kimi-k3", "kimi-k2.5"])
        assert cat.ids == [*ALL_IDS, "kimi-k3"]
        extra = cat.get("kimi-k3")
        assert extra is not None
        assert (extra.in_catalogue, extra.thinking, extra.rules) == (False, "unknown", ())
        assert cat.get("kimi-k2.5") == model("kimi-k2.5")  # an extra id never replaces a row
        assert cat.get("nope") is None

    @pytest.mark.parametrize(("model_id", "requested", "expected"), [
        ("kimi-k2.5", None, True),
        ("kimi-k2.5", True, True),
        ("kimi-k2.5", False, False),
        ("kimi-k2-thinking", None, True),
        ("kimi-k2-thinking", False, True),
        ("kimi-k2-thinking-turbo", None, True),
        ("kimi-k2-instruct-0905", None, False),
        ("kimi-k2-instruct-0905", True, False),
        ("kimi-k2-turbo-preview", None, False),
    ])
    def test_thinks(self, model_id: str, requested: bool | None, expected: bool) -> None:
        assert model(model_id).thinks(requested) is expected

    def test_extra_model_does_not_think_by_default(self) -> None:
        extra = Catalogue(CATALOGUE, ["kimi-k3"]).get("kimi-k3")
        assert extra is not None and extra.thinks(None) is False

    def test_rules(self) -> None:
        fixed = SamplingRule("temperature", "r", fixed=1.0, when="thinking")
        assert fixed.applies(True) and not fixed.applies(False)
        assert fixed.allowed(0.3) == 1.0
        capped = SamplingRule("temperature", "r", maximum=1.0)
        assert capped.applies(True) and capped.applies(False)
        assert (capped.allowed(1.5), capped.allowed(0.4)) == (1.0, 0.4)
        k25 = model("kimi-k2.5").to_dict("kimi-k2.5")
        assert k25["default"] is True
        assert {(r["param"], r["when"], r.get("fixed")) for r in k25["sampling_rules"]} == {
            ("temperature", "thinking", 1.0), ("temperature", "no_thinking", 0.6), ("top_p", "always", 0.95),
        }
        assert model("kimi-k2-instruct-0905").to_dict("kimi-k2.5")["default"] is False
        assert model("kimi-k2-thinking").rules == ()
