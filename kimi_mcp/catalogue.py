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

__all__ = ["CATALOGUE", "Catalogue", "ModelInfo", "Replay", "SamplingRule", "Status", "Thinking", "catalogue_for"]

Thinking = Literal["always", "default_on", "none", "unknown"]
Status = Literal["current", "listed", "reported_retired"]
"""current: in Ace's current docs; listed: Ace listed it once, status unknown; reported_retired:
third parties report Moonshot retired it (Ace may still map it, so it stays callable)."""
Replay = Literal["none", "keep", "always", "required"]
"""Earlier turns' reasoning sent back: never (it costs input tokens); with `thinking.keep` (the
model's preserved-thinking mode, asked for whenever it thinks); always, where stored; or required
(the model refuses a history in which an earlier answer lacks it)."""


@dataclass(frozen=True, slots=True)
class SamplingRule:
    """A constraint the upstream enforces on one sampling parameter.

    `fixed` means only that value is accepted; `maximum` caps it; `omit` means the model fixes it
    at a value it does not publish, so none is sent. `when` limits the rule to calls with thinking
    on or off. A caller's value outside the rule is replaced (or left out), and the result says
    so, instead of being forwarded to a certain 400.
    """

    param: Literal["temperature", "top_p"]
    reason: str
    fixed: float | None = None
    maximum: float | None = None
    omit: bool = False
    when: Literal["always", "thinking", "no_thinking"] = "always"

    def applies(self, thinking: bool) -> bool:
        return self.when == "always" or (self.when == "thinking") == thinking

    def allowed(self, value: float) -> float | None:
        """The value the upstream accepts closest to what was asked (None: send none)."""
        if self.omit:
            return None
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
        if self.omit:
            out["not_sent"] = True
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
    status: Status = "current"
    status_note: str = ""
    vision: bool = False
    reasoning_efforts: tuple[str, ...] = ()
    reasoning_replay: Replay = "none"
    default_max_tokens: int | None = None
    """Sent when the caller gives no max_tokens: some gateways end long thinking answers early without one."""

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
            "status": self.status,
            "status_note": self.status_note,
            "vision": self.vision,
            "reasoning_efforts": list(self.reasoning_efforts),
            "reasoning_replay": self.reasoning_replay,
            "default_max_tokens": self.default_max_tokens,
        }


_TEMPERATURE_0_1 = SamplingRule("temperature", "Moonshot accepts temperature 0-1 on this model", maximum=1.0)
_K3_RULES = (
    SamplingRule("temperature", "K3 models accept only temperature 1", fixed=1.0),
    SamplingRule("top_p", "K3 models fix top_p themselves; none is sent", omit=True),
)
_K3_EFFORTS = ("low", "high", "max")
_RETIRED_PREVIEW = "Reported retired at Moonshot during 2026; Ace may still map it."


def _k2_sampling(model_id: str) -> tuple[SamplingRule, ...]:
    """k2.5's fixed sampling, which k2.6 shares."""
    return (
        SamplingRule("temperature", f"{model_id} accepts only temperature 1.0 with thinking on", fixed=1.0,
                     when="thinking"),
        SamplingRule("temperature", f"{model_id} accepts only temperature 0.6 with thinking off", fixed=0.6,
                     when="no_thinking"),
        SamplingRule("top_p", f"{model_id} accepts only top_p 0.95", fixed=0.95),
    )


CATALOGUE: tuple[ModelInfo, ...] = (
    ModelInfo(
        "kimi-k3",
        "Flagship (2026-07; Ace's default): strongest all-round reasoning, coding, writing; 1M context; "
        "always thinks; reads images.",
        context_window=1_048_576, thinking="always", rules=_K3_RULES, vision=True,
        reasoning_efforts=_K3_EFFORTS, default_max_tokens=16_384,
        status_note="Ace may cap its output at 16,384 tokens.",
    ),
    ModelInfo(
        "kimi-k3.1-pro",
        "K3.1 Pro (2026-10): the deepest reasoning for the hardest problems; 1M context; long outputs; "
        "always thinks; reads images.",
        context_window=1_048_576, thinking="always", rules=_K3_RULES, vision=True,
        reasoning_efforts=_K3_EFFORTS, default_max_tokens=32_768,
    ),
    ModelInfo(
        "kimi-k3.1-pro-highspeed",
        "K3.1 Pro at high speed (costs more per token); 1M context; always thinks; reads images.",
        context_window=1_048_576, thinking="always", rules=_K3_RULES, vision=True,
        reasoning_efforts=_K3_EFFORTS, default_max_tokens=32_768,
    ),
    ModelInfo(
        "kimi-k2.7-code",
        "Coding specialist (K2.7): always thinks (cannot be switched off) and keeps its reasoning across turns.",
        thinking="always", vision=True, reasoning_replay="required", default_max_tokens=32_768,
    ),
    ModelInfo(
        "kimi-k2.7-code-highspeed",
        "The K2.7 coding model at high speed; always thinks and keeps its reasoning across turns.",
        thinking="always", vision=True, reasoning_replay="required", default_max_tokens=32_768,
    ),
    ModelInfo(
        "kimi-k2.6",
        "K2.6: strong general model that thinks by default (turn off with thinking) and keeps its "
        "reasoning across turns; reads images.",
        thinking="default_on", thinking_switch=True, rules=_k2_sampling("kimi-k2.6"), vision=True,
        reasoning_replay="keep", default_max_tokens=32_768,
    ),
    ModelInfo(
        "kimi-k2.5",
        "K2.5: strong reasoning, coding and writing; thinks by default (turn off with thinking); reads images.",
        thinking="default_on", thinking_switch=True, rules=_k2_sampling("kimi-k2.5"), vision=True,
        reasoning_replay="always", status="reported_retired",
        status_note="Reported retired at Moonshot on 2026-08-31; Ace may still map it.",
    ),
    ModelInfo(
        "kimi-k2-thinking",
        "Deep step-by-step reasoning for hard problems (maths, planning, debugging); always thinks, slow.",
        thinking="always", reasoning_replay="always",
    ),
    ModelInfo(
        "kimi-k2-thinking-turbo",
        "The thinking model at turbo speed (about 60-100 tokens/s); always thinks.",
        thinking="always", reasoning_replay="always",
    ),
    ModelInfo(
        "kimi-k2-instruct-0905",
        "Fast general chat and coding without thinking; good for quick answers.",
        rules=(_TEMPERATURE_0_1,), status="listed",
        status_note="In Ace's tutorial; not in Ace's current client list.",
    ),
    ModelInfo(
        "kimi-k2-0905-preview",
        "K2 (September 2025 preview): general chat, agentic coding; no thinking.",
        rules=(_TEMPERATURE_0_1,), status="reported_retired", status_note=_RETIRED_PREVIEW,
    ),
    ModelInfo(
        "kimi-k2-turbo-preview",
        "K2 turbo: the fastest non-thinking model (about 60-100 tokens/s).",
        rules=(_TEMPERATURE_0_1,), status="reported_retired", status_note=_RETIRED_PREVIEW,
    ),
    ModelInfo(
        "kimi-k2-0711-preview",
        "The first K2 release (July 2025); 128K context; no thinking.",
        context_window=131_072, rules=(_TEMPERATURE_0_1,), status="reported_retired",
        status_note=_RETIRED_PREVIEW,
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
                vision=True,
            ))

    def get(self, model_id: str) -> ModelInfo | None:
        return self._models.get(model_id)

    @property
    def ids(self) -> list[str]:
        return list(self._models)

    @property
    def current_ids(self) -> list[str]:
        """The ids to suggest: current built-in models (and the operator's extras)."""
        return [m.id for m in self._models.values() if m.status == "current"]

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
