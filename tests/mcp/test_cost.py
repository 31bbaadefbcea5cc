"""Cost per call and per conversation through a real MCP client against the fake: every result's
`usage` (cached and reasoning counts where the upstream reports them) and `cost_estimate_usd`
computed from the fake's usage match the price table; conversations keep running totals that add
up across calls and survive reopening the SQLite store; KIMI_PRICES replaces the table.

The expected figures are computed here from `kimi_mcp/prices.json` read as plain JSON, not through
`kimi_mcp.prices`, so the module is checked against the data.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from mcp import Client

from tests.mcp.helpers import call, ok
from tests.support.fake_ace import FakeAce, reply
from tests.support.harness import ROOT, connect

pytestmark = pytest.mark.anyio

TABLE: dict[str, dict[str, float]] = json.loads((ROOT / "kimi_mcp" / "prices.json").read_text())["models"]
ENV = {"KIMI_MAX_RETRIES": "0", "KIMI_EXTRA_MODELS": "kimi-next-preview"}
K3_MODELS = ("kimi-k3", "kimi-k3.1-pro", "kimi-k3.1-pro-highspeed")
BIG_USAGE = {"prompt_tokens": 1_000_000, "completion_tokens": 100_000, "total_tokens": 1_100_000,
             "cached_tokens": 400_000, "completion_tokens_details": {"reasoning_tokens": 30_000}}


def expected_cost(model: str, usage: dict[str, Any], table: dict[str, dict[str, float]] = TABLE) -> float:
    """The table's figures applied to a result's usage: cached prompt tokens at the hit price."""
    price = table[model]
    cached = usage["cached_tokens"] or 0
    return (
        (usage["prompt_tokens"] - cached) * price["input_cache_miss"]
        + cached * price["input_cache_hit"]
        + usage["completion_tokens"] * price["output"]
    ) / 1_000_000


async def chat(client: Client, **args: Any) -> dict[str, Any]:
    return ok(await call(client, "kimi_chat", args))


@pytest.fixture(scope="module")
async def client(fake: FakeAce) -> Any:
    async with connect("memory", fake, env=ENV) as c:
        yield c


@pytest.mark.parametrize("model", sorted(TABLE))
async def test_each_priced_models_cost_is_the_fakes_usage_at_the_tables_prices(
    client: Client, fake: FakeAce, model: str
) -> None:
    """Two calls on a conversation with Kimi's prefix cache on: the second one's prompt is partly cached."""
    fake.cache_prefixes = True
    first = await chat(client, prompt="Explain prompt caching in detail. " * 20, model=model)
    second = await chat(client, prompt="And its price?", model=model, conversation_id=first["conversation_id"])
    for result in (first, second):
        assert result["usage"]["prompt_tokens"] > 0 and result["usage"]["completion_tokens"] > 0
        assert result["cost_estimate_usd"] == pytest.approx(expected_cost(model, result["usage"]), rel=1e-9)
        assert result["cost_estimate_usd"] > 0
    if model in K3_MODELS:  # the K3 stream reports only the three counts
        assert second["usage"]["cached_tokens"] is None and second["usage"]["reasoning_tokens"] is None
    else:
        assert 0 < second["usage"]["cached_tokens"] < second["usage"]["prompt_tokens"]


@pytest.mark.parametrize("way", ["ace-stream", "moonshot-stream", "plain"])
async def test_cached_and_reasoning_counts_and_the_cost_of_a_known_usage(fake: FakeAce, way: str) -> None:
    """1M prompt tokens (400K cached), 100K completion (30K of it reasoning) on kimi-k2.5: $0.70."""
    env = {**ENV, "KIMI_SOFT_DEADLINE": "0" if way == "plain" else "50"}
    async with connect("memory", fake, env=env) as c:
        fake.script(reply(usage=BIG_USAGE, moonshot_usage=way == "moonshot-stream"))
        result = await chat(c, prompt="hi", model="kimi-k2.5")
    assert fake.requests[-1].json.get("stream", False) is (way != "plain")
    assert result["usage"] == {"prompt_tokens": 1_000_000, "completion_tokens": 100_000, "total_tokens": 1_100_000,
                               "reasoning_tokens": 30_000, "cached_tokens": 400_000}
    # reasoning tokens are part of completion_tokens, charged once at the output price
    assert result["cost_estimate_usd"] == pytest.approx(0.6 * 0.60 + 0.4 * 0.10 + 0.1 * 3.00)


async def test_the_k3_stream_has_no_cached_or_reasoning_counts(client: Client, fake: FakeAce) -> None:
    """Whatever the upstream knows, the K3 stream carries three counts: all prompt tokens at the miss price."""
    fake.script(reply(usage=BIG_USAGE, reasoning="thinking"))
    result = await chat(client, prompt="hi", model="kimi-k3")
    assert result["usage"] == {"prompt_tokens": 1_000_000, "completion_tokens": 100_000, "total_tokens": 1_100_000,
                               "reasoning_tokens": None, "cached_tokens": None}
    assert result["cost_estimate_usd"] == pytest.approx(1.0 * 3.00 + 0.1 * 15.00)


@pytest.mark.parametrize("model", ["kimi-k2.7-code", "kimi-k2-instruct-0905", "kimi-next-preview"])
async def test_a_model_without_prices_has_a_null_cost(client: Client, model: str) -> None:
    result = await chat(client, prompt="hi", model=model)
    assert result["usage"]["total_tokens"] > 0
    assert result["cost_estimate_usd"] is None
    listed = ok(await call(client, "kimi_list_conversations", {"limit": 500}))["conversations"]
    totals = next(c["totals"] for c in listed if c["conversation_id"] == result["conversation_id"])
    assert totals["unpriced_calls"] == 1 and totals["cost_estimate_usd"] is None


async def test_a_json_answer_costs_both_answers_after_a_repair(client: Client, fake: FakeAce) -> None:
    small = {"prompt_tokens": 1_000, "completion_tokens": 200, "total_tokens": 1_200}
    fake.script(reply("not json", usage=small), reply('{"a": 1}', usage={**small, "cached_tokens": 800}))
    result = ok(await call(client, "kimi_json", {"prompt": "give me a", "model": "kimi-k2.5"}))
    assert result["attempts"] == 2 and result["value"] == {"a": 1}
    assert result["usage"] == {"prompt_tokens": 2_000, "completion_tokens": 400, "total_tokens": 2_400,
                               "reasoning_tokens": None, "cached_tokens": 800}
    assert result["cost_estimate_usd"] == pytest.approx(expected_cost("kimi-k2.5", result["usage"]))


async def test_the_cost_is_labelled_an_estimate_in_the_output_schemas(client: Client) -> None:
    tools = {tool.name: tool for tool in (await client.list_tools()).tools}
    for name in ("kimi_chat", "kimi_json"):
        schema = tools[name].output_schema
        assert schema is not None
        result = schema["anyOf"][0]  # the result, then the error shape
        assert "ESTIMATED" in result["properties"]["cost_estimate_usd"]["description"]
        assert len(tools[name].description or "") < 1024
    assert "estimated cost" in (tools["kimi_list_conversations"].description or "")


async def test_totals_add_up_across_calls_and_survive_reopening_the_store(fake: FakeAce, tmp_path: Path) -> None:
    env = {**ENV, "KIMI_STORE": str(tmp_path / "conversations.sqlite3")}
    fake.cache_prefixes = True
    results: list[dict[str, Any]] = []
    async with connect("memory", fake, env=env) as c:
        results.append(await chat(c, prompt="First question, with some length to it. " * 10, model="kimi-k2.5"))
        cid = results[0]["conversation_id"]
        for prompt in ("Second question?", "Third question?"):
            results.append(await chat(c, prompt=prompt, conversation_id=cid))
        read = ok(await call(c, "kimi_read_conversation", {"conversation_id": cid}))
        shown = (await call(c, "kimi_read_conversation", {"conversation_id": cid})).content[0].text  # type: ignore[union-attr]
    usages = [r["usage"] for r in results]
    totals = {
        "prompt_tokens": sum(u["prompt_tokens"] for u in usages),
        "completion_tokens": sum(u["completion_tokens"] for u in usages),
        "cached_tokens": sum(u["cached_tokens"] or 0 for u in usages),
        "unpriced_calls": 0,
    }
    cost = sum(r["cost_estimate_usd"] for r in results)
    assert totals["cached_tokens"] > 0
    assert cost == pytest.approx(sum(expected_cost("kimi-k2.5", u) for u in usages))
    assert read["totals"] == {**totals, "cost_estimate_usd": pytest.approx(cost)}
    assert shown.endswith(f"[totals: {totals['prompt_tokens']:,} prompt tokens ({totals['cached_tokens']:,} cached), "
                          f"{totals['completion_tokens']:,} completion tokens; estimated cost ${cost:.6f}]")

    async with connect("memory", fake, env=env) as again:  # a new process's view of the same file
        listed = ok(await call(again, "kimi_list_conversations", {}))["conversations"]
        assert [c["totals"] for c in listed] == [read["totals"]]
        assert "est." in (await call(again, "kimi_list_conversations", {})).content[0].text  # type: ignore[union-attr]
        more = await chat(again, prompt="Fourth question?", conversation_id=cid)
        after = ok(await call(again, "kimi_read_conversation", {"conversation_id": cid}))["totals"]
    assert after["prompt_tokens"] == totals["prompt_tokens"] + more["usage"]["prompt_tokens"]
    assert after["completion_tokens"] == totals["completion_tokens"] + more["usage"]["completion_tokens"]
    assert after["cost_estimate_usd"] == pytest.approx(cost + more["cost_estimate_usd"])


async def test_a_user_price_table_replaces_the_built_in_one(fake: FakeAce, tmp_path: Path) -> None:
    mine = {"kimi-k2.5": {"input_cache_miss": 1.0, "input_cache_hit": 0.5, "output": 2.0}}
    path = tmp_path / "my-prices.json"
    path.write_text(json.dumps({"as_of": "2026-12-01", "source": "my Ace invoice", "models": mine}))
    async with connect("memory", fake, env={**ENV, "KIMI_PRICES": str(path)}) as c:
        fake.script(reply(usage=BIG_USAGE))
        priced = await chat(c, prompt="hi", model="kimi-k2.5")
        unlisted = await chat(c, prompt="hi", model="kimi-k3")  # in the built-in table, not in mine
    assert priced["cost_estimate_usd"] == pytest.approx(0.6 * 1.0 + 0.4 * 0.5 + 0.1 * 2.0)
    assert priced["cost_estimate_usd"] == pytest.approx(expected_cost("kimi-k2.5", priced["usage"], mine))
    assert unlisted["cost_estimate_usd"] is None
