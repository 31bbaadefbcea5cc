"""Stored conversations and the soft deadline through a real MCP client, a real server and the fake:
continuing (and across restarts, SIGKILL, expiry), serialized concurrent calls, trimming at the
context window, stored limits, list/read/delete, failures that store nothing, reasoning sent back
only to thinking calls, answers handed over in pieces at the deadline, storage failures.

Most tests share one stdio subprocess on a SQLite file (module-scoped; every test uses its own
conversations, so they do not interfere). Restarts, expiry, the deadline and storage failures get
servers of their own. What the fake received proves what the server replayed.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from tests.support.fake_ace import DEFAULT_CONTENT, FakeAce, ace_error, cut, reply
from tests.support.harness import connect, server_env, spawn_http_server
from tests.support.models import DEFAULT_ID

pytestmark = pytest.mark.anyio

SHARED_ENV = {"KIMI_MAX_RETRIES": "0", "KIMI_SOFT_DEADLINE": "0"}


# --------------------------------------------------------------------------- helpers


async def call(c: Client, tool: str, **args: Any) -> dict[str, Any]:
    """A tool call that must succeed; its structured result."""
    result = await c.call_tool(tool, args)
    assert not result.is_error, result.content[0].text  # type: ignore[union-attr]
    structured: dict[str, Any] | None = result.structured_content
    assert structured is not None
    return structured


async def chat(c: Client, **args: Any) -> dict[str, Any]:
    return await call(c, "kimi_chat", **args)


async def fail(c: Client, tool: str, **args: Any) -> dict[str, Any]:
    """A tool call that must fail; its `error` object."""
    result = await c.call_tool(tool, args)
    assert result.is_error, result.structured_content
    assert result.structured_content is not None
    error: dict[str, Any] = result.structured_content["error"]
    return error


async def transcript(c: Client, conversation_id: str) -> dict[str, Any]:
    return await call(c, "kimi_read_conversation", conversation_id=conversation_id)


async def listed(c: Client) -> dict[str, dict[str, Any]]:
    """The caller's conversations by id (the list tool, at its maximum limit)."""
    found = await call(c, "kimi_list_conversations", limit=500)
    return {item["conversation_id"]: item for item in found["conversations"]}


def body(fake: FakeAce, index: int = -1) -> dict[str, Any]:
    """The JSON body of one request the fake received."""
    data = fake.requests[index].json
    assert isinstance(data, dict)
    return data


def sent(fake: FakeAce, index: int = -1) -> list[dict[str, Any]]:
    """The messages of one request the fake received."""
    messages: list[dict[str, Any]] = body(fake, index)["messages"]
    return messages


def exchange(prompt: str, answer: str = DEFAULT_CONTENT) -> list[dict[str, Any]]:
    return [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}]


def stdio_env(store: Path, **extra: str) -> dict[str, str]:
    return {"KIMI_STORE": str(store), **SHARED_ENV, **extra}


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
async def shared(fake: FakeAce, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Client]:
    """One stdio server on a SQLite file, for the tests that need no special settings."""
    store = tmp_path_factory.mktemp("shared") / "c.sqlite3"
    async with connect("stdio", fake, env=stdio_env(store)) as c:
        yield c


# --------------------------------------------------------------------------- continuing


async def test_continue_replays_system_and_history_and_keeps_model(shared: Client, fake: FakeAce) -> None:
    first = await chat(shared, prompt="Name a prime.", system="Answer tersely.", model="kimi-k2-instruct-0905")
    cid = first["conversation_id"]
    assert cid and first["dropped_turns"] == 0

    second = await chat(shared, prompt="Another one.", conversation_id=cid)
    assert second["conversation_id"] == cid and second["notice"] is None
    assert body(fake)["model"] == "kimi-k2-instruct-0905"  # the conversation's model
    assert sent(fake) == [
        {"role": "system", "content": "Answer tersely."},
        *exchange("Name a prime."),
        {"role": "user", "content": "Another one."},
    ]

    third = await chat(shared, prompt="And a third.", conversation_id=cid, system="Answer at length.")
    assert "system prompt replaces" in (third["notice"] or "")
    assert sent(fake)[0] == {"role": "system", "content": "Answer at length."}
    assert sent(fake)[1:] == [*exchange("Name a prime."), *exchange("Another one."),
                              {"role": "user", "content": "And a third."}]
    stored = await transcript(shared, cid)
    assert stored["system"] == "Answer at length."
    assert stored["model"] == "kimi-k2-instruct-0905"
    assert stored["turns"] == [*exchange("Name a prime."), *exchange("Another one."), *exchange("And a third.")]


async def test_unknown_conversation_and_resume_without_pending(shared: Client, fake: FakeAce) -> None:
    error = await fail(shared, "kimi_chat", prompt="hi", conversation_id="conv_doesnotexist")
    assert error["kind"] == "invalid_arguments"
    assert "conv_doesnotexist" in error["message"]

    cid = (await chat(shared, prompt="done already"))["conversation_id"]
    error = await fail(shared, "kimi_chat", conversation_id=cid, resume=True)
    assert error["kind"] == "invalid_arguments"
    assert "nothing to resume" in error["message"]
    error = await fail(shared, "kimi_chat", resume=True)
    assert error["kind"] == "invalid_arguments"
    assert len(fake.requests) == 1  # only the call that created the conversation went upstream


async def test_continue_across_restart_then_expire(fake: FakeAce, tmp_path: Path) -> None:
    """A conversation outlives its server process (a new server on the same file replays it), until
    a restart with a ~0.9 s TTL after > 1 s idle purges it, from the file too. Only the first server
    must be a subprocess (it is the one that stops); later ones run in-process to save start-up time."""
    store = tmp_path / "c.sqlite3"
    async with connect("stdio", fake, env=stdio_env(store)) as c:
        cid = (await chat(c, prompt="Remember 42.", system="Be brief."))["conversation_id"]

    async with connect("memory", fake, env=stdio_env(store)) as c:
        assert (await listed(c))[cid]["turns"] == 2
        await chat(c, prompt="What number?", conversation_id=cid)
        assert sent(fake) == [{"role": "system", "content": "Be brief."}, *exchange("Remember 42."),
                              {"role": "user", "content": "What number?"}]
        assert len((await transcript(c, cid))["turns"]) == 4

    await anyio.sleep(1.2)
    async with connect("memory", fake, env=stdio_env(store, KIMI_CONVERSATION_TTL_DAYS="0.00001")) as c:
        assert cid not in await listed(c)
        assert (await fail(c, "kimi_chat", prompt="hello?", conversation_id=cid))["kind"] == "invalid_arguments"
        assert (await fail(c, "kimi_read_conversation", conversation_id=cid))["kind"] == "invalid_arguments"
    assert len(fake.requests) == 2
    with sqlite3.connect(store) as db:
        assert db.execute("SELECT count(*) FROM conversations").fetchone() == (0,)
        assert db.execute("SELECT count(*) FROM turns").fetchone() == (0,)


@contextmanager
def killable_http_server(env: dict[str, str]) -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    """A Streamable HTTP server subprocess the test can SIGKILL (the harness's only terminates)."""
    port, proc, _log = spawn_http_server(env, prefix="kimi-mcp-kill-")
    try:
        yield port, proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


async def test_continue_after_sigkill(fake: FakeAce, tmp_path: Path) -> None:
    """An answer returned to the client is on disk: SIGKILL the server right after, nothing is lost."""
    store = tmp_path / "c.sqlite3"
    with killable_http_server(server_env(fake, **stdio_env(store))) as (port, proc):
        async with httpx2.AsyncClient(timeout=httpx2.Timeout(30)) as http:
            transport = streamable_http_client(f"http://127.0.0.1:{port}/mcp", http_client=http)
            async with Client(transport) as c:
                first = await chat(c, prompt="Keep this safe.", system="Archivist.")
                second = await chat(c, prompt="And this.", conversation_id=first["conversation_id"])
        proc.kill()
        assert proc.wait(timeout=10) == -9

    cid = second["conversation_id"]
    async with connect("memory", fake, env=stdio_env(store)) as c:  # the restart: in-process is enough
        await chat(c, prompt="What did I ask you to keep?", conversation_id=cid)
        assert sent(fake) == [{"role": "system", "content": "Archivist."}, *exchange("Keep this safe."),
                              *exchange("And this."), {"role": "user", "content": "What did I ask you to keep?"}]


# --------------------------------------------------------------------------- concurrency


async def test_concurrent_calls_on_one_conversation_are_serialized(shared: Client, fake: FakeAce) -> None:
    """Five calls at once: each upstream request extends the previous one by exactly one exchange."""
    cid = (await chat(shared, prompt="start"))["conversation_id"]
    answers = [f"answer {i}" for i in range(5)]
    fake.script(*(reply(a) for a in answers))
    fake.latency = 0.2
    prompts = [f"question {i}" for i in range(5)]
    results: dict[str, dict[str, Any]] = {}

    async def ask(prompt: str) -> None:
        results[prompt] = await chat(shared, prompt=prompt, conversation_id=cid)

    async with anyio.create_task_group() as tg:
        for prompt in prompts:
            tg.start_soon(ask, prompt)

    requests = [sent(fake, i) for i in range(1, 6)]
    order = [messages[-1]["content"] for messages in requests]  # the prompt each request carried
    assert sorted(order) == prompts
    assert requests[0] == [*exchange("start"), {"role": "user", "content": order[0]}]
    for k in range(1, 5):  # serialized: request k = request k-1 + its answer + the new prompt
        assert requests[k] == [*requests[k - 1], {"role": "assistant", "content": answers[k - 1]},
                               {"role": "user", "content": order[k]}]
    for k, prompt in enumerate(order):  # each caller got the answer to its own prompt
        assert results[prompt]["text"] == answers[k]
        assert results[prompt]["conversation_id"] == cid

    stored = (await transcript(shared, cid))["turns"]
    assert stored == [*exchange("start"), *(t for k in range(5) for t in exchange(order[k], answers[k]))]


# --------------------------------------------------------------------------- context window and limits


async def test_trimming_at_the_context_window(shared: Client, fake: FakeAce) -> None:
    """~25k-token prompts on the 128K model: the sixth call drops the oldest exchanges, never the system,
    in one step of about 40 % of the window (two exchanges here); the seventh keeps the same cut, so the
    prefix Kimi cached stays the prefix sent."""
    def big(i: int) -> str:
        return f"turn {i} " + "x" * 100_000

    cid = (await chat(shared, prompt=big(1), system="SYS", model="kimi-k2-0711-preview"))["conversation_id"]
    for i in range(2, 6):
        result = await chat(shared, prompt=big(i), conversation_id=cid)
        assert result["dropped_turns"] == 0, i
    assert len(sent(fake)) == 1 + 2 * 4 + 1  # call 5 still sent everything

    sixth = await chat(shared, prompt=big(6), conversation_id=cid)
    assert sixth["dropped_turns"] == 4
    assert "4 oldest turns were left out" in (sixth["notice"] or "")
    messages = sent(fake)
    assert messages[0] == {"role": "system", "content": "SYS"}
    assert messages[1:] == [*(t for i in range(3, 6) for t in exchange(big(i))), {"role": "user", "content": big(6)}]
    seventh = await chat(shared, prompt=big(7), conversation_id=cid)
    assert seventh["dropped_turns"] == 4
    assert sent(fake)[: len(messages)] == [*messages[:-1], *exchange(big(6))][: len(messages)]  # same prefix
    # trimming only shapes the request: storage keeps every turn
    assert len((await transcript(shared, cid))["turns"]) == 14


async def test_max_tokens_shrinks_the_history_budget(shared: Client, fake: FakeAce) -> None:
    """Three ~5k-token exchanges fit 256K (kimi-k2.5's window), but not beside a 250,000-token answer reserve."""
    cid = ""
    for i in range(3):
        args: dict[str, Any] = {"conversation_id": cid} if cid else {"model": "kimi-k2.5"}
        cid = (await chat(shared, prompt=f"part {i} " + "y" * 20_000, **args))["conversation_id"]

    roomy = await chat(shared, prompt="summarise", conversation_id=cid)
    assert roomy["dropped_turns"] == 0
    assert len(sent(fake)) == 7

    tight = await chat(shared, prompt="summarise again", conversation_id=cid, max_tokens=250_000)
    assert tight["dropped_turns"] == 2
    messages = sent(fake)
    assert [m["content"][:6] for m in messages if m["role"] == "user"] == ["part 1", "part 2", "summar", "summar"]
    assert body(fake)["max_tokens"] == 250_000
    assert body(fake)["model"] == "kimi-k2.5"  # the conversation's model, kept when a call names none


async def test_stored_turn_and_byte_limits_prune_oldest(fake: FakeAce, tmp_path: Path) -> None:
    """KIMI_MAX_TURNS / KIMI_MAX_CONVERSATION_BYTES delete the oldest exchanges from storage (in-process)."""
    env = {"KIMI_STORE": str(tmp_path / "c.sqlite3"), "KIMI_MAX_TURNS": "8", **SHARED_ENV}
    async with connect("memory", fake, env=env) as c:
        cid = (await chat(c, prompt="q1"))["conversation_id"]
        pruned = [(await chat(c, prompt=f"q{n}", conversation_id=cid))["pruned_turns"] for n in range(2, 6)]
        assert pruned == [0, 0, 0, 4]  # over 8 turns: down to 6 at once
        assert (await transcript(c, cid))["turns"] == [*exchange("q3"), *exchange("q4"), *exchange("q5")]
        assert (await listed(c))[cid]["turns"] == 6
        await chat(c, prompt="q6", conversation_id=cid)
        assert sent(fake) == [*exchange("q3"), *exchange("q4"), *exchange("q5"), {"role": "user", "content": "q6"}]

    env = {"KIMI_STORE": str(tmp_path / "b.sqlite3"), "KIMI_MAX_CONVERSATION_BYTES": "1000", **SHARED_ENV}
    prompts = [f"{i}" * 300 for i in range(4)]  # an exchange is 321 bytes: three fit in 1000, four do not
    async with connect("memory", fake, env=env) as c:
        # a model that does not think: no stored reasoning adds to the exchange's bytes
        cid = (await chat(c, prompt=prompts[0], model="kimi-k2-instruct-0905"))["conversation_id"]
        pruned = [(await chat(c, prompt=p, conversation_id=cid))["pruned_turns"] for p in prompts[1:]]
        assert pruned == [0, 0, 4]  # over 1000 bytes: down to 750 at once
        assert (await transcript(c, cid))["turns"] == [t for p in prompts[2:] for t in exchange(p)]


# --------------------------------------------------------------------------- list, read, delete


async def test_list_read_delete_tools_and_resources(shared: Client, fake: FakeAce) -> None:
    long_prompt = "Please   review\nthis design document " + "carefully " * 30
    older = (await chat(shared, prompt=long_prompt, system="Reviewer."))["conversation_id"]
    await chat(shared, prompt="a later prompt does not retitle", conversation_id=older)
    newer = (await chat(shared, prompt="Short one", model="kimi-k2-turbo-preview"))["conversation_id"]

    found = await call(shared, "kimi_list_conversations", limit=500)
    ids = [item["conversation_id"] for item in found["conversations"]]
    assert ids.index(newer) < ids.index(older)  # most recently used first
    by_id = {item["conversation_id"]: item for item in found["conversations"]}
    title = by_id[older]["title"]
    assert len(title) == 80 and title.endswith("…")
    assert title.startswith("Please review this design document carefully")
    assert by_id[older]["turns"] == 4 and by_id[older]["model"] == DEFAULT_ID
    assert by_id[newer] | {"last_used": "", "totals": None} == {  # totals: see tests/mcp/test_cost.py
        "conversation_id": newer, "title": "Short one", "model": "kimi-k2-turbo-preview", "turns": 2, "last_used": "",
        "totals": None}
    assert by_id[newer]["last_used"].endswith("+00:00")
    assert (await call(shared, "kimi_list_conversations", limit=1))["conversations"][0]["conversation_id"] == newer

    read = await transcript(shared, older)
    assert read | {"totals": None} == {
        "conversation_id": older, "title": title, "model": DEFAULT_ID, "system": "Reviewer.",
        "turns": [*exchange(long_prompt), *exchange("a later prompt does not retitle")], "totals": None}

    resource = await shared.read_resource(f"kimi://conversations/{older}")
    assert resource.contents[0].mime_type == "application/json"
    assert json.loads(resource.contents[0].text) == read  # type: ignore[union-attr]
    listing = json.loads((await shared.read_resource("kimi://conversations")).contents[0].text)  # type: ignore[union-attr]
    assert listing == found | {"conversations": listing["conversations"]}
    assert {item["conversation_id"]: item for item in listing["conversations"]}[newer] == by_id[newer]

    assert await call(shared, "kimi_delete_conversation", conversation_id=older) == {
        "conversation_id": older, "deleted": True}
    assert (await call(shared, "kimi_delete_conversation", conversation_id=older))["deleted"] is False
    assert older not in await listed(shared)
    assert newer in await listed(shared)
    assert (await fail(shared, "kimi_read_conversation", conversation_id=older))["kind"] == "invalid_arguments"
    with pytest.raises(MCPError):
        await shared.read_resource(f"kimi://conversations/{older}")
    before = len(fake.requests)
    error = await fail(shared, "kimi_chat", prompt="still there?", conversation_id=older)
    assert error["kind"] == "invalid_arguments"
    assert len(fake.requests) == before  # refused before any upstream call


# --------------------------------------------------------------------------- failures store nothing


async def test_failed_calls_leave_the_conversation_unchanged(shared: Client, fake: FakeAce) -> None:
    cid = (await chat(shared, prompt="one", system="Original system."))["conversation_id"]
    await chat(shared, prompt="two", conversation_id=cid)
    before = await transcript(shared, cid)
    before_listed = (await listed(shared))[cid]
    count_before = len(await listed(shared))

    failures = [ace_error(500, "server_error", "boom"), ace_error(403, "forbidden", "refused"),
                cut("mid_stream"), cut("reset"), cut("headers")]
    for i, response in enumerate(failures):
        fake.script(response)
        error = await fail(shared, "kimi_chat", prompt=f"doomed {i}", conversation_id=cid, system="New system.")
        assert error["kind"] not in ("storage", "invalid_arguments"), error
        assert await transcript(shared, cid) == before, response
        assert (await listed(shared))[cid] == before_listed
    fake.script(ace_error(500, "server_error", "boom"))
    assert (await fail(shared, "kimi_chat", prompt="a new conversation that fails"))["kind"] == "upstream"
    assert len(await listed(shared)) == count_before  # no conversation was created for it
    assert len(fake.requests) == 2 + len(failures) + 1  # no retries (KIMI_MAX_RETRIES=0)

    await chat(shared, prompt="three", conversation_id=cid)
    assert sent(fake) == [{"role": "system", "content": "Original system."}, *exchange("one"), *exchange("two"),
                          {"role": "user", "content": "three"}]


# --------------------------------------------------------------------------- thinking history


async def test_reasoning_goes_back_only_to_thinking_calls(shared: Client, fake: FakeAce) -> None:
    fake.script(reply("Paris.", reasoning="France's capital is Paris."))
    cid = (await chat(shared, prompt="Capital of France?", model="kimi-k2-thinking"))["conversation_id"]
    await chat(shared, prompt="And Italy?", conversation_id=cid)
    assert body(fake)["model"] == "kimi-k2-thinking"
    assert sent(fake)[1] == {"role": "assistant", "content": "Paris.",
                             "reasoning_content": "France's capital is Paris."}

    fake.script(reply("Berlin.", reasoning="Germany's capital."))
    cid = (await chat(shared, prompt="Capital of Germany?", model="kimi-k2-instruct-0905"))["conversation_id"]
    await chat(shared, prompt="And Spain?", conversation_id=cid)
    assert sent(fake)[1] == {"role": "assistant", "content": "Berlin."}

    fake.script(reply("Tokyo.", reasoning="Japan's capital."))
    cid = (await chat(shared, prompt="Capital of Japan?", model="kimi-k2.5"))["conversation_id"]  # thinks by default
    await chat(shared, prompt="And Korea?", conversation_id=cid, thinking="disabled")
    assert sent(fake)[1] == {"role": "assistant", "content": "Tokyo."}
    await chat(shared, prompt="And China?", conversation_id=cid)
    assert sent(fake)[1] == {"role": "assistant", "content": "Tokyo.", "reasoning_content": "Japan's capital."}

    # the default (kimi-k3) always thinks, but its catalogue row says not to send reasoning back
    fake.script(reply("Madrid.", reasoning="Spain's capital."))
    cid = (await chat(shared, prompt="Capital of Spain?"))["conversation_id"]
    await chat(shared, prompt="And Portugal?", conversation_id=cid)
    assert body(fake)["model"] == DEFAULT_ID
    assert sent(fake)[1] == {"role": "assistant", "content": "Madrid."}


# --------------------------------------------------------------------------- soft deadline


async def test_deadline_returns_pieces_and_stores_one_turn(fake: FakeAce, tmp_path: Path) -> None:
    """A ~3.6 s answer under a 1 s soft deadline arrives in pieces; storage holds it once, whole."""
    full = "".join(f"{i:03d}|" for i in range(90))  # 360 characters: 36 chunks 0.1 s apart
    fake.script(reply(full, chunk_size=10, chunk_delay=0.1))
    env = stdio_env(tmp_path / "c.sqlite3", KIMI_SOFT_DEADLINE="1")
    async with connect("stdio", fake, env=env) as c:
        first = await c.call_tool("kimi_chat", {"prompt": "Count slowly."})
        assert not first.is_error
        pieces = [first.structured_content]
        assert pieces[0] is not None and pieces[0]["finish_reason"] == "deadline"
        cid = pieces[0]["conversation_id"]
        assert pieces[0]["offset"] == 0 and full.startswith(pieces[0]["text"])
        shown = first.content[0].text  # type: ignore[union-attr]
        assert cid in shown and "resume=true" in shown
        # still generating: nothing stored yet
        assert (await fail(c, "kimi_read_conversation", conversation_id=cid))["kind"] == "invalid_arguments"

        while pieces[-1]["finish_reason"] == "deadline":
            assert len(pieces) < 12, "the answer never completed"
            pieces.append(await chat(c, conversation_id=cid, resume=True))

        assert len(pieces) >= 3  # the first resume ended at ~2 s, before the stream could
        assert pieces[1]["offset"] > 0 and pieces[1]["finish_reason"] == "deadline"
        delivered = 0
        for piece in pieces:
            assert piece["offset"] == delivered and piece["conversation_id"] == cid
            delivered += len(piece["text"])
        assert pieces[-1]["finish_reason"] == "stop"
        assert "".join(p["text"] for p in pieces) == full
        assert len(fake.requests) == 1  # resuming never restarts the generation

        assert (await transcript(c, cid))["turns"] == exchange("Count slowly.", full)
        assert (await fail(c, "kimi_chat", conversation_id=cid, resume=True))["kind"] == "invalid_arguments"


# --------------------------------------------------------------------------- storage failure


async def test_storage_failure_is_reported_and_the_server_stays_up(fake: FakeAce, tmp_path: Path) -> None:
    """KIMI_STORE names a directory: storing fails with kind 'storage', the answer is in the error."""
    async with connect("stdio", fake, env={"KIMI_STORE": str(tmp_path), **SHARED_ENV}) as c:
        fake.script(reply("the lost answer"))
        error = await fail(c, "kimi_chat", prompt="hello")
        assert error["kind"] == "storage"
        assert error["text"] == "the lost answer"
        assert str(tmp_path) in error["message"]
        assert len(fake.requests) == 1

        assert (await fail(c, "kimi_list_conversations"))["kind"] == "storage"
        assert (await fail(c, "kimi_read_conversation", conversation_id="conv_x"))["kind"] == "storage"
        assert (await fail(c, "kimi_delete_conversation", conversation_id="conv_x"))["kind"] == "storage"
        assert (await fail(c, "kimi_chat", prompt="more", conversation_id="conv_x"))["kind"] == "storage"
        assert len(fake.requests) == 1  # continuing fails on the load, before any upstream call

        value = (await call(c, "kimi_json", prompt="Give me a JSON object."))["value"]
        assert isinstance(value, dict)
        assert (await fail(c, "kimi_chat", prompt="again"))["kind"] == "storage"


async def test_partial_results_name_the_conversations_model(fake: FakeAce) -> None:
    """In-process: a continued conversation on kimi-k2-turbo-preview, answer cut by the deadline."""
    async with connect("memory", fake, env={**SHARED_ENV, "KIMI_SOFT_DEADLINE": "0.5"}) as c:
        cid = (await chat(c, prompt="hi", model="kimi-k2-turbo-preview"))["conversation_id"]
        fake.script(reply("z" * 200, chunk_size=10, chunk_delay=0.1))  # ~2 s: two partials at least
        pieces = [await chat(c, prompt="more", conversation_id=cid)]
        while pieces[-1]["finish_reason"] == "deadline" and len(pieces) < 12:
            pieces.append(await chat(c, conversation_id=cid, resume=True))
        assert body(fake)["model"] == "kimi-k2-turbo-preview"
        assert pieces[0]["finish_reason"] == "deadline" and pieces[1]["finish_reason"] == "deadline"
        assert [p["model"] for p in pieces] == ["kimi-k2-turbo-preview"] * len(pieces)


# --------------------------------------------------------------------------- delete while answering


async def test_delete_during_an_answer_stays_deleted(shared: Client, fake: FakeAce) -> None:
    """Delete a conversation while a call on it waits for Kimi: once the call ends it must stay gone."""
    cid = (await chat(shared, prompt="secret plans"))["conversation_id"]
    fake.script(reply("more secrets", delay=1.5))
    async with anyio.create_task_group() as tg:
        tg.start_soon(shared.call_tool, "kimi_chat", {"prompt": "go on", "conversation_id": cid})
        await anyio.to_thread.run_sync(fake.wait_for_requests, 2)
        assert (await call(shared, "kimi_delete_conversation", conversation_id=cid))["deleted"] is True
    assert cid not in await listed(shared)
    assert (await fail(shared, "kimi_read_conversation", conversation_id=cid))["kind"] == "invalid_arguments"


# --------------------------------------------------------------------------- the model is resolved once


async def test_continued_conversation_is_checked_against_its_own_model(fake: FakeAce) -> None:
    """A continued call is validated against the conversation's own model, not the default: with a
    non-thinking default, a conversation started on kimi-k2.5 and continued with thinking enabled
    (no model given) works, on kimi-k2.5."""
    env = {"KIMI_DEFAULT_MODEL": "kimi-k2-instruct-0905", "KIMI_SOFT_DEADLINE": "0", "KIMI_MAX_RETRIES": "0"}
    async with connect("memory", fake, env=env) as c:
        first = await chat(c, prompt="Start on k2.5", model="kimi-k2.5")
        assert body(fake)["model"] == "kimi-k2.5"
        fake.reset()
        second = await chat(c, prompt="Now think", thinking="enabled", conversation_id=first["conversation_id"])
        assert body(fake)["model"] == "kimi-k2.5"
        assert body(fake)["thinking"] == {"type": "enabled"}
        assert second["conversation_id"] == first["conversation_id"]
        # A model without the switch is still refused, naming that model (not the default).
        fake.reset()
        refused = await fail(c, "kimi_chat", prompt="x", thinking="enabled", model="kimi-k2-thinking",
                             conversation_id=first["conversation_id"])
        assert refused["kind"] == "invalid_arguments"
        assert "kimi-k2-thinking" in refused["message"] and "kimi-k2-instruct-0905" not in refused["message"]
        assert fake.requests == []


# --------------------------------------------------------------------------- no history


async def test_store_false_keeps_nothing_and_touches_no_store(fake: FakeAce, tmp_path: Path) -> None:
    """KIMI_STORE names a directory, so every store read or write fails: `store: false` still
    answers (it reads and writes nothing), where a stored call reports the store's failure."""
    async with connect("memory", fake, env={"KIMI_STORE": str(tmp_path), **SHARED_ENV}) as c:
        result = await c.call_tool("kimi_chat", {"prompt": "one-off", "store": False})
        assert not result.is_error, result.content
        assert result.structured_content is not None
        assert result.structured_content["conversation_id"] is None
        assert result.structured_content["text"] == DEFAULT_CONTENT
        assert result.content[0].text.endswith("[not stored]")  # type: ignore[union-attr]
        assert (await fail(c, "kimi_chat", prompt="kept"))["kind"] == "storage"
        refused = await fail(c, "kimi_chat", prompt="again", conversation_id="conv_x", store=False)
        assert refused["kind"] == "invalid_arguments" and "store is false" in refused["message"]
    assert sent(fake, 0) == [{"role": "user", "content": "one-off"}]


async def test_store_false_answers_still_resume_after_the_soft_deadline(fake: FakeAce) -> None:
    full = "".join(f"{i:02d}|" for i in range(40))  # 120 characters, 3 s of stream
    fake.script(reply(full, chunk_size=4, chunk_delay=0.1))
    async with connect("memory", fake, env={**SHARED_ENV, "KIMI_SOFT_DEADLINE": "1"}) as c:
        first = await chat(c, prompt="slow one-off", store=False)
        assert first["finish_reason"] == "deadline" and first["conversation_id"]  # the resume handle
        pieces = [first]
        while pieces[-1]["finish_reason"] == "deadline":
            assert len(pieces) < 10
            pieces.append(await chat(c, conversation_id=first["conversation_id"], resume=True))
        assert "".join(p["text"] for p in pieces) == full
        assert pieces[-1]["conversation_id"] is None  # nothing to continue
        assert first["conversation_id"] not in await listed(c)


async def test_kimi_store_none_keeps_no_conversation(fake: FakeAce, tmp_path: Path) -> None:
    data = tmp_path / "data"
    env = {"KIMI_STORE": "none", "XDG_DATA_HOME": str(data), **SHARED_ENV}
    async with connect("stdio", fake, env=env) as c:
        answered = await chat(c, prompt="hello")
        assert answered["conversation_id"] is None and answered["text"] == DEFAULT_CONTENT
        assert await listed(c) == {}
        refused = await fail(c, "kimi_chat", prompt="more", conversation_id="conv_anything")
        assert refused["kind"] == "invalid_arguments" and "KIMI_STORE=none" in refused["message"]
    assert not data.exists() or not any(data.rglob("*"))  # no store file was written
