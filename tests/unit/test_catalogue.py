"""`kimi_mcp.catalogue`: the model rows (ids, context windows), extra models from settings, whether a
model thinks for a given switch, and the sampling rules with how they are shown."""

from __future__ import annotations

import pytest

from kimi_mcp.catalogue import CATALOGUE, Catalogue, SamplingRule
from kimi_mcp.chat.conversations import replays_reasoning
from tests.support.models import ALL_IDS, CURRENT_IDS, DEFAULT_ID
from tests.unit.samples import model

REPLAY = {
    "kimi-k3": "none",  # it would only cost input tokens
    "kimi-k3.1-pro": "none",
    "kimi-k3.1-pro-highspeed": "none",
    "kimi-k2.7-code": "required",  # refuses a history without it
    "kimi-k2.7-code-highspeed": "required",
    "kimi-k2.6": "keep",  # preserved thinking, asked for with thinking.keep
    "kimi-k2.5": "always",
    "kimi-k2-thinking": "always",
    "kimi-k2-thinking-turbo": "always",
    "kimi-k2-instruct-0905": "none",
    "kimi-k2-0905-preview": "none",
    "kimi-k2-turbo-preview": "none",
    "kimi-k2-0711-preview": "none",
}
"""What each row sends back of earlier turns' reasoning."""


class TestCatalogue:
    def test_all_models_present(self) -> None:
        assert Catalogue(CATALOGUE).ids == ALL_IDS
        assert model("kimi-k2-0711-preview").context_window == 131_072
        assert model("kimi-k2.5").context_window == 262_144
        for k3 in ("kimi-k3", "kimi-k3.1-pro", "kimi-k3.1-pro-highspeed"):
            assert model(k3).context_window == 1_048_576, k3
        assert model("kimi-k2.6").context_window == model("kimi-k2.7-code").context_window == 262_144

    def test_extra_models(self) -> None:
        cat = Catalogue(CATALOGUE, ["kimi-k9", "kimi-k2.5"])
        assert cat.ids == [*ALL_IDS, "kimi-k9"]
        extra = cat.get("kimi-k9")
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
        ("kimi-k3", None, True),
        ("kimi-k3", False, True),  # always thinks: no switch
        ("kimi-k3.1-pro", None, True),
        ("kimi-k2.7-code", False, True),
        ("kimi-k2.6", None, True),
        ("kimi-k2.6", False, False),
    ])
    def test_thinks(self, model_id: str, requested: bool | None, expected: bool) -> None:
        assert model(model_id).thinks(requested) is expected

    def test_extra_model_does_not_think_by_default(self) -> None:
        extra = Catalogue(CATALOGUE, ["kimi-k9"]).get("kimi-k9")
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

    def test_current_ids(self) -> None:
        """What hints suggest: the rows not reported retired or of unknown status, and the extras."""
        assert Catalogue(CATALOGUE).current_ids == CURRENT_IDS
        assert DEFAULT_ID in CURRENT_IDS
        assert Catalogue(CATALOGUE, ["kimi-k9"]).current_ids == [*CURRENT_IDS, "kimi-k9"]
        statuses = {m.id: m.status for m in CATALOGUE}
        assert statuses["kimi-k2-instruct-0905"] == "listed"
        assert {i for i, status in statuses.items() if status == "reported_retired"} == {
            "kimi-k2.5", "kimi-k2-0905-preview", "kimi-k2-turbo-preview", "kimi-k2-0711-preview"}
        assert all(m.status_note for m in CATALOGUE if m.status != "current")


class TestLineUp:
    @pytest.mark.parametrize("model_id", ["kimi-k3", "kimi-k3.1-pro", "kimi-k3.1-pro-highspeed"])
    def test_k3_rules(self, model_id: str) -> None:
        """K3 accepts only temperature 1, thinking on or not, and fixes top_p itself: none is sent."""
        k3 = model(model_id)
        assert (k3.thinking, k3.thinking_switch, k3.vision) == ("always", False, True)
        assert k3.reasoning_efforts == ("low", "high", "max")
        temperature, top_p = k3.rules
        assert (temperature.param, temperature.fixed, temperature.when) == ("temperature", 1.0, "always")
        assert temperature.applies(True) and temperature.applies(False)
        assert (temperature.allowed(0.2), temperature.allowed(1.0)) == (1.0, 1.0)
        assert (top_p.param, top_p.omit, top_p.when) == ("top_p", True, "always")
        assert top_p.allowed(0.5) is None and top_p.allowed(0.95) is None  # whatever was asked: not sent
        assert top_p.to_dict() == {"param": "top_p", "when": "always", "reason": top_p.reason, "not_sent": True}
        assert "not_sent" not in temperature.to_dict()

    def test_omit_wins_over_fixed_and_maximum(self) -> None:
        assert SamplingRule("top_p", "r", fixed=0.9, maximum=0.5, omit=True).allowed(0.3) is None

    def test_to_dict_shows_the_new_fields(self) -> None:
        k3 = model("kimi-k3").to_dict(DEFAULT_ID)
        assert {key: k3[key] for key in ("status", "vision", "reasoning_efforts", "reasoning_replay",
                                         "default_max_tokens", "default")} == {
            "status": "current", "vision": True, "reasoning_efforts": ["low", "high", "max"],
            "reasoning_replay": "none", "default_max_tokens": 16_384, "default": True}
        assert "16,384" in k3["status_note"]
        k25 = model("kimi-k2.5").to_dict(DEFAULT_ID)
        assert (k25["status"], k25["reasoning_replay"], k25["reasoning_efforts"], k25["default"]) == (
            "reported_retired", "always", [], False)
        assert "2026-08-31" in k25["status_note"]
        instruct = model("kimi-k2-instruct-0905").to_dict(DEFAULT_ID)
        assert (instruct["status"], instruct["vision"], instruct["default_max_tokens"]) == ("listed", False, None)
        assert all(set(m.to_dict(DEFAULT_ID)) == set(k3) for m in CATALOGUE)  # every row has every field

    @pytest.mark.parametrize(("model_id", "replay"), list(REPLAY.items()))
    def test_reasoning_replay(self, model_id: str, replay: str) -> None:
        assert model(model_id).reasoning_replay == replay

    def test_the_replay_table_covers_every_row(self) -> None:
        assert list(REPLAY) == ALL_IDS

    @pytest.mark.parametrize("model_id", list(REPLAY))
    def test_reasoning_goes_back_where_the_row_says_and_only_when_thinking(self, model_id: str) -> None:
        info = model(model_id)
        assert replays_reasoning(info, True) is (REPLAY[model_id] != "none")
        assert replays_reasoning(info, False) is False

    @pytest.mark.parametrize(("model_id", "cap"), [
        ("kimi-k3", 16_384), ("kimi-k3.1-pro", 32_768), ("kimi-k2.7-code", 32_768), ("kimi-k2.6", 32_768),
        ("kimi-k2.5", None), ("kimi-k2-thinking", None), ("kimi-k2-turbo-preview", None),
    ])
    def test_default_max_tokens(self, model_id: str, cap: int | None) -> None:
        assert model(model_id).default_max_tokens == cap

    def test_extra_models_take_images_and_have_no_efforts(self) -> None:
        extra = Catalogue(CATALOGUE, ["kimi-k9"]).get("kimi-k9")
        assert extra is not None
        assert (extra.vision, extra.reasoning_efforts, extra.reasoning_replay, extra.default_max_tokens) == (
            True, (), "none", None)
