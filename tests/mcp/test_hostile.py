"""Hostile or odd upstream answers through a real MCP client: a token echoed back never leaves the
server (results, progress, resources, stored rows, JSON keys), two incomplete answers on one
conversation keep their own resume handles, and split surrogates never cost a paid answer.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import anyio
import pytest

from tests.mcp.helpers import Progress, call, error_of, ok, structured, text
from tests.support.fake_ace import FakeAce, reply, stream_raw
from tests.support.harness import connect

pytestmark = pytest.mark.anyio

FRAGMENT = 10  # kimi_mcp.redaction.MIN_FRAGMENT


def leaks(token: str, *texts: str) -> list[str]:
    """Every place any 10-character piece of the token shows up."""
    pieces = {token[i:i + FRAGMENT] for i in range(len(token) - FRAGMENT + 1)}
    return [t[:80] for t in texts if any(piece in t for piece in pieces)]


async def test_an_echoed_token_is_masked_on_every_exit(fake: FakeAce, tmp_path: Path) -> None:
    store = tmp_path / "c.sqlite3"
    token = fake.token
    echo = f"Your header was Authorization: Bearer {token}. Also cut: {token[:-1]}"
    fake.script(reply(echo, reasoning=f"thinking about {token}", chunk_size=16, chunk_delay=0.01))
    progress = Progress()
    env = {"KIMI_STORE": str(store), "KIMI_SOFT_DEADLINE": "0", "KIMI_MAX_RETRIES": "0"}
    async with connect("memory", fake, era="legacy", env=env) as client:
        result = await call(client, "kimi_chat", {"prompt": f"repeat {token}", "include_reasoning": True}, progress)
        out = ok(result)
        cid = out["conversation_id"]
        read = await client.read_resource(f"kimi://conversations/{cid}")
        listed = await client.read_resource("kimi://conversations")
        fake.script(reply(json.dumps({token: "value", "ok": token[:20]})))
        as_json = ok(await client.call_tool("kimi_json", {"prompt": "echo as JSON"}))
    resource_texts = [getattr(c, "text", "") for c in [*read.contents, *listed.contents]]
    with sqlite3.connect(store) as conn:
        rows = [str(v) for row in conn.execute("SELECT content, reasoning FROM turns") for v in row]
        rows += [str(v) for row in conn.execute("SELECT title, system FROM conversations") for v in row]
    assert "****" in text(result)
    everything = [text(result), json.dumps(out), *[m or "" for m in progress.messages], *resource_texts, *rows,
                  json.dumps(as_json)]
    assert progress.messages, "the stream should have reported progress"
    assert leaks(token, *everything) == []
    assert as_json["value"]["ok"] == "****"


async def test_two_incomplete_answers_on_one_conversation_keep_their_own_handles(fake: FakeAce) -> None:
    env = {"KIMI_SOFT_DEADLINE": "0.3", "KIMI_MAX_RETRIES": "0"}
    first_text = "FIRST " * 40
    second_text = "SECOND " * 40
    async with connect("memory", fake, env=env) as client:
        fake.script(reply("start"))
        cid = ok(await client.call_tool("kimi_chat", {"prompt": "hello"}))["conversation_id"]
        fake.script(reply(first_text, chunk_size=6, chunk_delay=0.03),
                    reply(second_text, chunk_size=6, chunk_delay=0.03))
        results: dict[str, dict[str, Any]] = {}

        async def ask(name: str) -> None:
            results[name] = structured(await client.call_tool("kimi_chat", {"prompt": name, "conversation_id": cid}))

        async with anyio.create_task_group() as tg:
            tg.start_soon(ask, "one")
            await anyio.sleep(0.05)
            tg.start_soon(ask, "two")
        cut = [r for r in results.values() if r["finish_reason"] == "deadline"]
        assert cut and all(r["answer_id"] for r in cut)
        if len(cut) == 2:
            refused = error_of(await client.call_tool("kimi_chat", {"conversation_id": cid, "resume": True}))
            assert "answer_id" in refused["message"]
        assembled: dict[str, str] = {}
        for piece in cut:
            collected = piece["text"]
            handle = piece["answer_id"]
            while True:
                more = structured(await client.call_tool(
                    "kimi_chat", {"conversation_id": cid, "resume": True, "answer_id": handle}))
                collected += more["text"]
                if more["finish_reason"] != "deadline":
                    break
            assembled[handle] = collected
        for whole in assembled.values():
            assert whole in (first_text, second_text), whole[:60]
        assert len(set(assembled.values())) == len(assembled)
        unknown = error_of(await client.call_tool(
            "kimi_chat", {"conversation_id": cid, "resume": True, "answer_id": "ans_nope"}))
        assert unknown["kind"] == "invalid_arguments"


async def test_a_surrogate_pair_split_across_chunks_is_a_normal_answer(fake: FakeAce, memory_client: Any) -> None:
    pieces = ['data: {"choices": [{"index": 0, "delta": {"content": "Smile \\ud83d"}}]}\n\n',
              'data: {"choices": [{"index": 0, "delta": {"content": "\\ude00 and \\udc00"}, '
              '"finish_reason": "stop"}]}\n\n']
    fake.script(stream_raw(pieces))
    out = ok(await memory_client.call_tool("kimi_chat", {"prompt": "smile"}))
    assert out["text"] == "Smile \U0001F600 and \ufffd"


@pytest.fixture
async def memory_client(fake: FakeAce) -> Any:
    async with connect("memory", fake, env={"KIMI_MAX_RETRIES": "0"}) as client:
        yield client
