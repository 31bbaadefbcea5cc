"""One chat call without MCP: check the arguments against the catalogue, call Kimi once.

`ChatService.prepare` turns tool arguments into a `ChatRequest` (or `InvalidArguments`) for a
model already resolved; `ChatService.complete` runs it, streamed when someone is listening.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

from ..catalogue import Catalogue, ModelInfo
from ..errors import InternalError, InvalidArguments, NotFound
from ..prices import PriceTable, builtin_table
from ..upstream import Adjustment, ChatReply, ChatRequest, KimiClient, Message, Usage, build_body
from .attachments import Attachments, ReadScope, read_attachments
from .progress import StreamListener

__all__ = ["ChatArgs", "ChatService", "Completed", "empty_answer_notice"]

MAX_STOP_SEQUENCES = 4


@dataclass(frozen=True, slots=True)
class ChatArgs:
    """The tool's arguments after the MCP layer's type checks; `messages` are the caller's own turns."""

    prompt: str | None = None
    system: str | None = None
    messages: Sequence[Message] = ()
    model: str | None = None
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    stop: str | Sequence[str] | None = None
    thinking: Literal["enabled", "disabled"] | None = None
    reasoning_effort: str | None = None
    files: Sequence[str] = ()
    images: Sequence[str] = ()
    read_scope: ReadScope = field(default_factory=ReadScope)
    """Where `files` and `images` may be read (the operator's directories, the client's roots)."""
    attached: Attachments | None = None
    """`files` and `images` once read (`ChatService.attach`): what the user turn gets."""


@dataclass(frozen=True, slots=True)
class Completed:
    """A successful call: the reply plus what we changed and how many attempts it took."""

    reply: ChatReply
    request: ChatRequest
    adjustments: list[Adjustment] = field(default_factory=list)
    attempts: int = 1
    cost_usd: float | None = None
    """The reply's usage at the price table's figures: an estimate; None when the model has no prices."""


def _stop_list(stop: str | Sequence[str] | None) -> tuple[str, ...]:
    if stop is None:
        return ()
    items = (stop,) if isinstance(stop, str) else tuple(stop)
    if len(items) > MAX_STOP_SEQUENCES:
        raise InvalidArguments(f"stop takes at most {MAX_STOP_SEQUENCES} strings, got {len(items)}")
    if any(not item for item in items):
        raise InvalidArguments("stop strings must not be empty")
    return items


def _with_attachments(messages: list[Message], attached: Attachments | None) -> list[Message]:
    """The last user turn (the prompt's) with the files' text and the images after it."""
    if attached is None:
        raise InternalError("files or images were not read before the request was prepared")
    last = max(i for i, m in enumerate(messages) if m.role == "user")
    turn = messages[last]
    content = f"{turn.content}\n\n{attached.text}" if attached.text else turn.content
    return [*messages[:last], Message("user", content, images=attached.images), *messages[last + 1:]]


def empty_answer_notice(reply: ChatReply, thinks: bool) -> str | None:
    """Explain an empty answer cut by the token budget instead of returning a silent ''."""
    if reply.text.strip() or reply.finish_reason != "length":
        return None
    where = " while the model was still thinking" if thinks and reply.reasoning else ""
    return (
        f"The token budget (max_tokens) ran out{where}, before any answer text. "
        "Call again with a larger max_tokens (16000 or more for thinking models)."
    )


class ChatService:
    """Checks arguments against the catalogue and runs calls through the upstream client."""

    def __init__(self, client: KimiClient, catalogue: Catalogue, default_model: str,
                 prices: PriceTable | None = None) -> None:
        self.client = client
        self.catalogue = catalogue
        self.default_model = default_model
        self.prices = prices or builtin_table()
        """The process's price table (the operator's KIMI_PRICES file, else the built-in one)."""

    def cost(self, model: ModelInfo, usage: Usage) -> float | None:
        """The estimated cost of `usage` on `model`, priced by the catalogue id asked for (the upstream
        may name a dated snapshot in its reply); None when the table has no prices for it."""
        return self.prices.estimate(model.id, usage)

    def _gone(self, error: NotFound, model: ModelInfo) -> NotFound:
        """The upstream does not know the model (unknown or retired): say which ones are current."""
        current = [m for m in self.catalogue.current_ids if m != model.id]
        error.hint = (f"the upstream does not know {model.id} (retired or never available there); "
                      f"call again with a current model: {', '.join(current)} (see kimi://models)")
        if model.id == self.default_model:
            error.hint += "; it is the server's default: set KIMI_DEFAULT_MODEL to one of them"
        error.details.update({"model": model.id, "current_models": current})
        return error

    def model(self, model_id: str | None) -> ModelInfo:
        wanted = (model_id or "").strip() or self.default_model
        info = self.catalogue.get(wanted)
        if info is None:
            raise InvalidArguments(
                f"unknown model {wanted!r}; valid ids: {', '.join(self.catalogue.ids)}",
                details={"valid_models": self.catalogue.ids},
            )
        return info

    def prepare(
        self,
        args: ChatArgs,
        *,
        model: ModelInfo | None = None,
        json_mode: bool = False,
        system_suffix: str = "",
    ) -> ChatRequest:
        """The upstream request for these arguments on `model` (default: the one `args` names, else
        the server's default), or `InvalidArguments` saying what is wrong."""
        model = model or self.model(args.model)
        if args.thinking is not None and not model.thinking_switch and model.in_catalogue:
            switchable = ", ".join(m.id for m in self.catalogue if m.thinking_switch) or "none"
            raise InvalidArguments(
                f"thinking can only be switched on models that support it ({switchable}), not {model.id}; "
                f"{model.id} thinking is {model.thinking!r}"
            )
        effort = self._effort(args.reasoning_effort, model)
        if args.images:
            self._check_vision(model)
        system = args.system
        if system is not None and not system.strip():
            raise InvalidArguments("system must not be empty when given")
        messages: list[Message] = []
        for index, item in enumerate(args.messages):
            if not item.content.strip():
                raise InvalidArguments(f"messages[{index}].content is empty")
            messages.append(Message(item.role, item.content))
        if args.prompt is not None:
            if not args.prompt.strip():
                raise InvalidArguments("prompt is empty")
            messages.append(Message("user", args.prompt))
        if not any(m.role == "user" for m in messages):
            raise InvalidArguments("give a prompt, or messages with at least one user turn")
        if args.files or args.images:
            messages = _with_attachments(messages, args.attached)
        # One system turn, first: `system` replaces any system turns in the history.
        history_system = "\n\n".join(m.content for m in messages if m.role == "system")
        messages = [m for m in messages if m.role != "system"]
        system = system if system is not None else (history_system or None)
        if system_suffix:
            system = f"{system}\n\n{system_suffix}" if system else system_suffix
        if system:
            messages.insert(0, Message("system", system))
        return ChatRequest(
            model=model,
            messages=tuple(messages),
            max_tokens=args.max_tokens,
            temperature=args.temperature,
            top_p=args.top_p,
            stop=_stop_list(args.stop),
            thinking=None if args.thinking is None else args.thinking == "enabled",
            json_mode=json_mode,
            reasoning_effort=effort,
        )

    async def attach(self, args: ChatArgs, model: ModelInfo | None = None) -> ChatArgs:
        """`args` with its files and images read (in a worker thread), once the model is known to take
        images; `prepare` adds them to the user turn."""
        if not (args.files or args.images) or args.attached is not None:
            return args
        if args.images:
            self._check_vision(model or self.model(args.model))
        return replace(args, attached=await read_attachments(args.files, args.images, args.read_scope))

    def _check_vision(self, model: ModelInfo) -> None:
        if not model.vision:
            takers = ", ".join(m.id for m in self.catalogue if m.vision) or "none"
            raise InvalidArguments(
                f"images: {model.id} reads text only; models that take images: {takers}",
                details={"vision_models": [m.id for m in self.catalogue if m.vision]},
            )

    def _effort(self, effort: str | None, model: ModelInfo) -> str | None:
        """`reasoning_effort` as the catalogue allows it for this model (an extra model gets it as given)."""
        if effort is None or not model.in_catalogue:
            return effort
        if effort not in model.reasoning_efforts:
            takers = ", ".join(m.id for m in self.catalogue if m.reasoning_efforts) or "none"
            allowed = f"one of {', '.join(model.reasoning_efforts)}" if model.reasoning_efforts else "not taken"
            raise InvalidArguments(
                f"reasoning_effort {effort!r} is not valid for {model.id} ({allowed}); models that take it: {takers}",
                details={"reasoning_efforts": list(model.reasoning_efforts)},
            )
        return effort

    async def complete(self, request: ChatRequest, *, listener: StreamListener | None = None) -> Completed:
        """One upstream call; streamed (and reported to `listener`) when someone listens."""
        body, adjustments = build_body(request, stream=listener is not None)
        try:
            if listener is None:
                outcome = await self.client.chat(body)
            else:
                outcome = await self.client.chat(
                    body,
                    on_delta=listener.update,
                    on_queued=lambda: listener.status("queued: waiting for a free upstream slot"),
                )
                await listener.flush()
        except NotFound as error:
            raise self._gone(error, request.model) from None
        reply = outcome.reply if outcome.reply.model else replace(outcome.reply, model=request.model.id)
        return Completed(reply, request, adjustments, outcome.attempts, self.cost(request.model, reply.usage))
