"""The chat layer without MCP: `ChatService`, `Conversations`, `Generations` and `ChatTools`, built
directly over a `KimiClient` on `httpx2.MockTransport` and a `MemoryStore` (no sockets).

These are the tools' logic as plain async functions: what is sent, what is stored, which model a
continued conversation uses, how an answer is handed over at the soft deadline and resumed.
"""

from __future__ import annotations

import builtins
import json
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import anyio
import httpx2
import pytest

from kimi_mcp.catalogue import CATALOGUE, Catalogue
from kimi_mcp.chat import (
    ChatArgs,
    ChatService,
    ChatTools,
    Conversations,
    Finished,
    Generations,
    Partial,
)
from kimi_mcp.errors import Cancelled, InvalidArguments, StorageFailure
from kimi_mcp.settings import Secret
from kimi_mcp.store import (
    Conversation,
    ConversationSummary,
    Limits,
    MemoryStore,
    SaveResult,
    StorageError,
    Turn,
)
from kimi_mcp.upstream import KimiClient, Message, RetryPolicy, Timeouts

pytestmark = pytest.mark.anyio

TIMEOUTS = Timeouts(connect=1.0, first_byte=5.0, idle=5.0, overall=10.0)
NO_RETRY = RetryPolicy(max_retries=0)
ME = "me"


def completion(text: str) -> dict[str, Any]:
    return {"id": "chatcmpl-u", "model": "", "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}]}


def sse_chunks(pieces: Sequence[str]) -> list[bytes]:
    out = [f"data: {json.dumps({'id': 'c', 'model': '', 'choices': [{'index': 0, 'delta': {'content': p}}]})}\n\n"
           .encode() for p in pieces]
    out.append(b'data: {"id": "c", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}\n\n')
    out.append(b"data: [DONE]\n\n")
    return out


class Upstream:
    """A MockTransport handler: records request bodies, answers plain or streamed, optionally slowly."""

    def __init__(self, text: str = "Hello!", *, piece_delay: float = 0.0) -> None:
        self.text = text
        self.piece_delay = piece_delay
        self.bodies: list[dict[str, Any]] = []
        self.finished = 0

    async def __call__(self, request: httpx2.Request) -> httpx2.Response:
        body: dict[str, Any] = json.loads(request.content)
        self.bodies.append(body)
        if not body.get("stream"):
            return httpx2.Response(200, json=completion(self.text))
        pieces = [self.text[i:i + 4] for i in range(0, len(self.text), 4)]

        async def stream() -> AsyncIterator[bytes]:
            for data in sse_chunks(pieces):
                await anyio.sleep(self.piece_delay)
                yield data
            self.finished += 1

        return httpx2.Response(200, headers={"content-type": "text/event-stream"}, content=stream())


class CountingStore(MemoryStore):
    """A MemoryStore that counts reads, and can be told to fail its writes."""

    def __init__(self) -> None:
        super().__init__()
        self.reads = 0
        self.fail_writes = False

    async def get(self, principal: str, conversation_id: str) -> Conversation | None:
        self.reads += 1
        return await super().get(principal, conversation_id)

    async def summary(self, principal: str, conversation_id: str) -> ConversationSummary | None:
        self.reads += 1
        return await super().summary(principal, conversation_id)

    async def save_exchange(self, principal: str, conversation_id: str, **kwargs: Any) -> SaveResult:
        if self.fail_writes:
            raise StorageError("disk full (test)")
        return await super().save_exchange(principal, conversation_id, **kwargs)

    async def list(self, principal: str, *, limit: int = 50) -> builtins.list[ConversationSummary]:
        return await super().list(principal, limit=limit)


def service_for(upstream: Callable[[httpx2.Request], Any], default_model: str = "kimi-k2.5") -> ChatService:
    http = httpx2.AsyncClient(transport=httpx2.MockTransport(upstream))
    client = KimiClient(http, base_url="http://ace.test", token=Secret("unit-token-0123456789"), timeouts=TIMEOUTS,
                        retry=NO_RETRY, max_concurrency=4)
    return ChatService(client, Catalogue(CATALOGUE), default_model)


def conversations_for(service: ChatService, store: MemoryStore | None = None) -> Conversations:
    return Conversations(service, store or CountingStore(), Limits(), ttl_s=0)


# --------------------------------------------------------------------------- ChatService


def test_prepare_uses_the_given_model_not_the_default() -> None:
    service = service_for(Upstream(), default_model="kimi-k2-instruct-0905")
    k25 = service.model("kimi-k2.5")
    request = service.prepare(ChatArgs(prompt="hi", thinking="enabled"), model=k25)
    assert request.model.id == "kimi-k2.5" and request.thinking is True
    with pytest.raises(InvalidArguments, match="kimi-k2-instruct-0905"):
        service.prepare(ChatArgs(prompt="hi", thinking="enabled"))  # the default has no switch


def test_thinking_refusal_names_the_switchable_models_from_the_catalogue() -> None:
    service = service_for(Upstream())
    with pytest.raises(InvalidArguments) as raised:
        service.prepare(ChatArgs(prompt="hi", model="kimi-k2-thinking", thinking="disabled"))
    switchable = [m.id for m in CATALOGUE if m.thinking_switch]
    assert switchable and all(model_id in raised.value.message for model_id in switchable)


def test_prepare_puts_one_system_turn_first() -> None:
    service = service_for(Upstream())
    args = ChatArgs(prompt="q", messages=(Message("system", "old"), Message("user", "u1"),
                                          Message("assistant", "a1")), system="new")
    request = service.prepare(args)
    assert [(m.role, m.content) for m in request.messages] == [
        ("system", "new"), ("user", "u1"), ("assistant", "a1"), ("user", "q")]


async def test_complete_plain_and_streamed() -> None:
    upstream = Upstream("Hello there")
    service = service_for(upstream)
    request = service.prepare(ChatArgs(prompt="hi", temperature=0.2))
    plain = await service.complete(request)
    assert plain.reply.text == "Hello there" and plain.reply.model == "kimi-k2.5"
    assert plain.adjustments and plain.adjustments[0].param == "temperature"  # k2.5 fixes it
    assert "stream" not in upstream.bodies[-1]

    class Listener:
        def __init__(self) -> None:
            self.texts: list[str] = []

        async def update(self, acc: Any) -> None:
            self.texts.append(acc.text)

        async def status(self, message: str) -> None: ...
        async def flush(self) -> None: ...
        def new_attempt(self) -> None: ...

    listener = Listener()
    streamed = await service.complete(request, listener=listener)
    assert streamed.reply.text == "Hello there" and listener.texts[-1] == "Hello there"
    assert upstream.bodies[-1]["stream"] is True


# --------------------------------------------------------------------------- Conversations


async def test_a_continued_conversation_reads_the_store_once_and_keeps_its_model() -> None:
    """Regression: the model is resolved once (asked, else the conversation's, else the default)
    and the conversation is read once per continued call."""
    upstream = Upstream("A1")
    store = CountingStore()
    conversations = conversations_for(service_for(upstream, default_model="kimi-k2-instruct-0905"), store)
    first = await conversations.run(ME, "conv_1", ChatArgs(prompt="Q1", model="kimi-k2.5"), continuing=False,
                                    listener=None)
    assert first.completed.request.model.id == "kimi-k2.5"
    assert store.reads == 0  # a new conversation is not read at all

    seen: list[str] = []
    second = await conversations.run(ME, "conv_1", ChatArgs(prompt="Q2", thinking="enabled"), continuing=True,
                                     listener=None, on_model=seen.append)
    assert store.reads == 1
    assert seen == ["kimi-k2.5"]
    assert upstream.bodies[-1]["model"] == "kimi-k2.5"
    assert upstream.bodies[-1]["thinking"] == {"type": "enabled"}
    assert [m["content"] for m in upstream.bodies[-1]["messages"]] == ["Q1", "A1", "Q2"]
    assert second.conversation_id == "conv_1"
    stored = await store.get(ME, "conv_1")
    assert stored is not None and [t.content for t in stored.turns] == ["Q1", "A1", "Q2", "A1"]


async def test_an_asked_model_wins_over_the_conversation_s() -> None:
    upstream = Upstream()
    conversations = conversations_for(service_for(upstream))
    await conversations.run(ME, "c", ChatArgs(prompt="Q1", model="kimi-k2.5"), continuing=False, listener=None)
    await conversations.run(ME, "c", ChatArgs(prompt="Q2", model="kimi-k2-turbo-preview"), continuing=True,
                            listener=None)
    assert upstream.bodies[-1]["model"] == "kimi-k2-turbo-preview"


async def test_unknown_conversation_is_refused_before_any_request() -> None:
    upstream = Upstream()
    conversations = conversations_for(service_for(upstream))
    with pytest.raises(InvalidArguments, match="unknown conversation_id"):
        await conversations.run(ME, "conv_missing", ChatArgs(prompt="x"), continuing=True, listener=None)
    assert upstream.bodies == []


async def test_another_principal_cannot_continue_a_conversation() -> None:
    conversations = conversations_for(service_for(Upstream()))
    await conversations.run("alice", "c", ChatArgs(prompt="Q"), continuing=False, listener=None)
    with pytest.raises(InvalidArguments):
        await conversations.run("bob", "c", ChatArgs(prompt="Q"), continuing=True, listener=None)
    assert await conversations.get("bob", "c") is None


async def test_a_store_failure_is_one_storage_error_that_keeps_the_answer() -> None:
    store = CountingStore()
    store.fail_writes = True
    conversations = conversations_for(service_for(Upstream("paid answer")), store)
    with pytest.raises(StorageFailure) as raised:
        await conversations.run(ME, "c", ChatArgs(prompt="Q"), continuing=False, listener=None)
    assert raised.value.details["text"] == "paid answer"
    assert "disk full" in raised.value.message


async def test_store_read_failures_become_storage_errors() -> None:
    class Broken(MemoryStore):
        async def list(self, principal: str, *, limit: int = 50) -> builtins.list[ConversationSummary]:
            raise StorageError("corrupt file (test)")

    conversations = conversations_for(service_for(Upstream()), Broken())
    with pytest.raises(StorageFailure, match="corrupt file"):
        await conversations.list(ME, 10)


# --------------------------------------------------------------------------- Generations and ChatTools


def tools_for(upstream: Upstream, tg: Any, soft_deadline: float) -> ChatTools:
    service = service_for(upstream)
    return ChatTools(service, conversations_for(service), Generations(tg), soft_deadline)


async def test_a_quick_answer_is_handed_over_whole() -> None:
    async with anyio.create_task_group() as tg:
        tools = tools_for(Upstream("Quick."), tg, soft_deadline=5.0)
        handover = await tools.chat(ME, ChatArgs(prompt="hi"), conversation_id=None, sink=None)
        tg.cancel_scope.cancel()
    assert isinstance(handover, Finished)
    assert handover.turn.completed.reply.text == "Quick." and handover.offset == 0


async def test_a_slow_answer_is_handed_over_in_pieces_and_resumed() -> None:
    upstream = Upstream("One two three four five six seven.", piece_delay=0.05)
    async with anyio.create_task_group() as tg:
        tools = tools_for(upstream, tg, soft_deadline=0.2)
        first = await tools.chat(ME, ChatArgs(prompt="long"), conversation_id=None, sink=None)
        assert isinstance(first, Partial)
        assert first.model == "kimi-k2.5" and first.offset == 0
        pieces = [first.piece]
        handover: Finished | Partial = first
        while isinstance(handover, Partial):
            handover = await tools.resume(ME, first.conversation_id, None)
            if isinstance(handover, Partial):
                assert handover.offset == sum(len(p) for p in pieces)
                pieces.append(handover.piece)
        full = handover.turn.completed.reply.text
        assert "".join(pieces) + full[handover.offset:] == full == upstream.text
        with pytest.raises(InvalidArguments, match="nothing to resume"):
            await tools.resume(ME, first.conversation_id, None)
        tg.cancel_scope.cancel()


async def test_a_caller_that_goes_away_stops_the_generation() -> None:
    upstream = Upstream("x" * 400, piece_delay=0.05)
    async with anyio.create_task_group() as tg:
        tools = tools_for(upstream, tg, soft_deadline=30.0)
        with anyio.move_on_after(0.2):
            await tools.chat(ME, ChatArgs(prompt="long"), conversation_id=None, sink=None)
        await anyio.sleep(0.3)
        assert upstream.finished == 0
        assert tools.generations.pending((ME, "anything")) is None
        tg.cancel_scope.cancel()


async def test_bad_arguments_come_back_from_the_generation_as_the_error() -> None:
    async with anyio.create_task_group() as tg:
        tools = tools_for(Upstream(), tg, soft_deadline=5.0)
        with pytest.raises(InvalidArguments, match="prompt is empty"):
            await tools.chat(ME, ChatArgs(prompt="   "), conversation_id=None, sink=None)
        tg.cancel_scope.cancel()


async def test_a_generation_cancelled_by_shutdown_reports_cancelled() -> None:
    async with anyio.create_task_group() as outer:
        async with anyio.create_task_group() as tg:
            generations = Generations(tg)

            async def job(generation: Any) -> str:
                await anyio.sleep(10)
                return "never"

            generation = generations.start((ME, "c"), "kimi-k2.5", job)
            await anyio.sleep(0.01)
            tg.cancel_scope.cancel()
        assert generation.done.is_set()
        with pytest.raises(Cancelled):
            generation.outcome()
        assert generations.pending((ME, "c")) is None
        outer.cancel_scope.cancel()


async def test_store_turns_keep_reasoning_for_thinking_models_only() -> None:
    store = CountingStore()
    await store.save_exchange(ME, "c", model="kimi-k2.5", system=None, title="t", limits=Limits(), now=1.0,
                              turns=[Turn("user", "Q1"), Turn("assistant", "A1", "why")])
    upstream = Upstream()
    conversations = conversations_for(service_for(upstream), store)
    await conversations.run(ME, "c", ChatArgs(prompt="Q2", thinking="enabled"), continuing=True, listener=None)
    assert upstream.bodies[-1]["messages"][1].get("reasoning_content") == "why"
    await conversations.run(ME, "c", ChatArgs(prompt="Q3", thinking="disabled"), continuing=True, listener=None)
    assert all("reasoning_content" not in m for m in upstream.bodies[-1]["messages"])


# --------------------------------------------------------------------------- bounds


async def test_the_caps_hold_for_the_exchange_being_saved() -> None:
    upstream = Upstream("short answer")
    store = CountingStore()
    conversations = Conversations(service_for(upstream), store, Limits(max_turns=5, max_bytes=1000), ttl_s=0)
    many = tuple(Message("user" if i % 2 == 0 else "assistant", f"m{i}") for i in range(6))
    with pytest.raises(InvalidArguments, match=r"would store 8 turns.*KIMI_MAX_TURNS"):
        await conversations.run(ME, "c", ChatArgs(prompt="q", messages=many), continuing=False, listener=None)
    with pytest.raises(InvalidArguments, match="KIMI_MAX_CONVERSATION_BYTES"):
        await conversations.run(ME, "c", ChatArgs(prompt="x" * 2000), continuing=False, listener=None)
    assert upstream.bodies == []  # refused before paying for an answer
    big = Upstream("y" * 1500)
    conversations = Conversations(service_for(big), store, Limits(max_turns=5, max_bytes=1000), ttl_s=0)
    turn = await conversations.run(ME, "d", ChatArgs(prompt="q"), continuing=False, listener=None)
    assert turn.completed.reply.text == "y" * 1500  # the answer is returned...
    assert any("not stored" in notice for notice in turn.notices)  # ...but not stored past the cap
    assert await store.get(ME, "d") is None


async def test_abandoned_answers_are_bounded_per_caller(monkeypatch: pytest.MonkeyPatch) -> None:
    from kimi_mcp.chat import generations as module

    monkeypatch.setattr(module, "MAX_DETACHED_PER_PRINCIPAL", 2)
    upstream = Upstream("z" * 400, piece_delay=0.05)
    async with anyio.create_task_group() as tg:
        tools = tools_for(upstream, tg, soft_deadline=0.05)
        cut = [await tools.chat(ME, ChatArgs(prompt=f"q{i}"), conversation_id=None, sink=None) for i in range(4)]
        assert all(isinstance(c, Partial) for c in cut)
        alive = [c for c in cut if isinstance(c, Partial) and tools.generations.waiting((ME, c.conversation_id))]
        assert alive == cut[2:]  # the oldest two were dropped (and stopped)
        other = await tools.chat("someone-else", ChatArgs(prompt="q"), conversation_id=None, sink=None)
        assert isinstance(other, Partial)  # another caller is not affected by my abandoned answers
        assert tools.generations.waiting(("someone-else", other.conversation_id))
        tg.cancel_scope.cancel()


class GetCountingStore(MemoryStore):
    """Counts whole-conversation reads (`get`) apart from the cheap `summary` checks."""

    def __init__(self) -> None:
        super().__init__()
        self.gets = 0

    async def get(self, principal: str, conversation_id: str) -> Conversation | None:
        self.gets += 1
        return await super().get(principal, conversation_id)


async def test_the_active_conversation_is_not_read_whole_again_until_someone_else_changes_it() -> None:
    """Two `Conversations` on one store stand for two replicas: each keeps the conversation it saved
    and checks only its summary; a save by the other makes it read the whole conversation again, so
    the other's exchange is never missing from what goes to Kimi."""
    upstream = Upstream("A")
    store = GetCountingStore()
    one = conversations_for(service_for(upstream), store)
    other = conversations_for(service_for(upstream), store)
    await one.run(ME, "conv_1", ChatArgs(prompt="Q1"), continuing=False, listener=None)
    for n in (2, 3, 4):
        await one.run(ME, "conv_1", ChatArgs(prompt=f"Q{n}"), continuing=True, listener=None)
    assert store.gets == 0  # every continued call was served from memory after a summary check
    assert [m["content"] for m in upstream.bodies[-1]["messages"]] == ["Q1", "A", "Q2", "A", "Q3", "A", "Q4"]

    await other.run(ME, "conv_1", ChatArgs(prompt="Q5"), continuing=True, listener=None)
    assert store.gets == 1  # the other had never seen it
    await one.run(ME, "conv_1", ChatArgs(prompt="Q6"), continuing=True, listener=None)
    assert store.gets == 2  # changed behind its back: read whole again
    sent = [m["content"] for m in upstream.bodies[-1]["messages"]]
    assert sent == ["Q1", "A", "Q2", "A", "Q3", "A", "Q4", "A", "Q5", "A", "Q6"]
    stored = await MemoryStore.get(store, ME, "conv_1")
    assert stored is not None and [t.content for t in stored.turns] == [*sent, "A"]

    assert await one.delete(ME, "conv_1")
    with pytest.raises(InvalidArguments, match="unknown conversation_id"):
        await one.run(ME, "conv_1", ChatArgs(prompt="Q7"), continuing=True, listener=None)
