"""The model catalogue: what each Kimi model is, as data.

Per-model behaviour (context window, thinking, sampling rules) lives in this table; code reads
the table instead of branching on model ids, so a new model is a new row (or, without a
release, an id in KIMI_EXTRA_MODELS).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

from .settings import Settings, SettingsError

__all__ = ["CATALOGUE", "Catalogue", "ModelInfo", "SamplingRule", "Thinking", "catalogue_for"]

Thinking = Literal["always", "default_on", "none", "unknown"]


@dataclass(frozen=True, slots=True)
class SamplingRule:
    """A constraint the upstream enforces on one sampling parameter.

    `fixed` means only that value is accepted; `maximum` caps it. `when` limits the rule to
    calls with thinking on or off. A caller's value outside the rule is replaced, and the
    result says so, instead of being forwarded to a certain 400.
    """

    param: Literal["temperature", "top_p"]
    reason: str
    fixed: float | None = None
    maximum: float | None = None
    when: Literal["always", "thinking", "no_thinking"] = "always"

    def applies(self, thinking: bool) -> bool:
        return self.when == "always" or (self.when == "thinking") == thinking

    def allowed(self, value: float) -> float:
        """The value the upstream accepts closest to what was asked."""
        if self.fixed is not None:
            return self.fixed
        if self.maximum is not None:
            return min(value, self.maximum)
        return value

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"param": self.param, "when": self.when, "reason": self.reason}
        if self.fixed is not None:
            out["fixed"] = self.fixed
        if self.maximum is not None:
            out["maximum"] = self.maximum
        return out


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """One model: a row of the catalogue."""

    id: str
    description: str
    context_window: int = 262_144
    thinking: Thinking = "none"
    thinking_switch: bool = False
    rules: tuple[SamplingRule, ...] = ()
    in_catalogue: bool = True

    def thinks(self, requested: bool | None) -> bool:
        """Whether a call thinks, given the caller's `thinking` choice (None: model default)."""
        if self.thinking == "always":
            return True
        if self.thinking_switch and requested is not None:
            return requested
        return self.thinking == "default_on"

    def to_dict(self, default_model: str) -> dict[str, Any]:
        return {
            "id": self.id,
            "description": self.description,
            "context_window": self.context_window,
            "thinking": self.thinking,
            "thinking_switch": self.thinking_switch,
            "sampling_rules": [rule.to_dict() for rule in self.rules],
            "default": self.id == default_model,
            "in_catalogue": self.in_catalogue,
        }


_TEMPERATURE_0_1 = SamplingRule("temperature", "Moonshot accepts temperature 0-1 on this model", maximum=1.0)

CATALOGUE: tuple[ModelInfo, ...] = (
    ModelInfo(
        "kimi-k2.5",
        "Flagship: strongest reasoning, coding and writing; thinks by default (turn off with thinking).",
        thinking="default_on",
        thinking_switch=True,
        rules=(
            SamplingRule("temperature", "kimi-k2.5 accepts only temperature 1.0 with thinking on",
                         fixed=1.0, when="thinking"),
            SamplingRule("temperature", "kimi-k2.5 accepts only temperature 0.6 with thinking off",
                         fixed=0.6, when="no_thinking"),
            SamplingRule("top_p", "kimi-k2.5 accepts only top_p 0.95", fixed=0.95),
        ),
    ),
    ModelInfo(
        "kimi-k2-thinking",
        "Deep step-by-step reasoning for hard problems (maths, planning, debugging); always thinks, slow.",
        thinking="always",
    ),
    ModelInfo(
        "kimi-k2-thinking-turbo",
        "The thinking model at turbo speed (about 60-100 tokens/s); always thinks.",
        thinking="always",
    ),
    ModelInfo(
        "kimi-k2-instruct-0905",
        "Fast general chat and coding without thinking; good default for quick answers.",
        rules=(_TEMPERATURE_0_1,),
    ),
    ModelInfo(
        "kimi-k2-0905-preview",
        "K2 (September 2025 preview): general chat, agentic coding; no thinking.",
        rules=(_TEMPERATURE_0_1,),
    ),
    ModelInfo(
        "kimi-k2-turbo-preview",
        "K2 turbo: the fastest non-thinking model (about 60-100 tokens/s).",
        rules=(_TEMPERATURE_0_1,),
    ),
    ModelInfo(
        "kimi-k2-0711-preview",
        "The first K2 release (July 2025); 128K context; no thinking.",
        context_window=131_072,
        rules=(_TEMPERATURE_0_1,),
    ),
)


class Catalogue:
    """The models this server accepts: the built-in table plus the operator's extra ids."""

    def __init__(self, models: Iterable[ModelInfo], extra_ids: Iterable[str] = ()) -> None:
        self._models = {model.id: model for model in models}
        for model_id in extra_ids:
            self._models.setdefault(model_id, ModelInfo(
                model_id,
                "Accepted through KIMI_EXTRA_MODELS; not in the built-in catalogue, so no rules apply.",
                thinking="unknown",
                in_catalogue=False,
            ))

    def get(self, model_id: str) -> ModelInfo | None:
        return self._models.get(model_id)

    @property
    def ids(self) -> list[str]:
        return list(self._models)

    def __iter__(self) -> Iterator[ModelInfo]:
        return iter(self._models.values())


def catalogue_for(settings: Settings) -> Catalogue:
    """The catalogue these settings give (built-in rows plus KIMI_EXTRA_MODELS), refusing a default
    model it does not hold: nothing would work."""
    catalogue = Catalogue(CATALOGUE, settings.extra_models)
    if catalogue.get(settings.default_model) is None:
        raise SettingsError(
            f"invalid setting KIMI_DEFAULT_MODEL: {settings.default_model!r} is not a known model "
            f"(known: {', '.join(catalogue.ids)}; add new ids with KIMI_EXTRA_MODELS)"
        )
    return catalogue
