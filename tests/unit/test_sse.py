"""`kimi_mcp.upstream.sse`: `StreamAccumulator` reading an event stream line by line: Ace's and
Moonshot's chunk shapes, usage wherever it rides, comments, CRLF, multi-line data, [DONE],
malformed chunks, error events (mapped like status bodies), and every shape the fake sends."""

from __future__ import annotations

import json
from typing import Any

import pytest

from kimi_mcp.errors import (
    AuthError,
    InsufficientBalance,
    InvalidResponse,
    KimiError,
    NotFound,
    RateLimited,
    UpstreamFailure,
)
from kimi_mcp.upstream.sse import StreamAccumulator, StreamDelta
from tests.support import fake_ace
from tests.unit.samples import chunk

USAGE = {"prompt_tokens": 9, "completion_tokens": 20, "total_tokens": 29,
         "completion_tokens_details": {"reasoning_tokens": 12}}


def sse(*chunks: Any, done: bool = True, nl: str = "\n", comments: bool = False) -> str:
    """The event-stream text for these chunks."""
    parts = [(f": keep-alive{nl}{nl}" if comments else "") + f"data: {json.dumps(c)}{nl}{nl}" for c in chunks]
    if done:
        parts.append(f"data: [DONE]{nl}{nl}")
    return "".join(parts)


def feed(text: str, acc: StreamAccumulator | None = None) -> tuple[StreamAccumulator, list[StreamDelta]]:
    """Feed the text line by line, keeping each line's ending as the wire had it."""
    acc = acc or StreamAccumulator()
    deltas = [d for line in text.splitlines(keepends=True) if (d := acc.feed_line(line)) is not None]
    return acc, deltas


ACE_STREAM = [
    chunk({"content": "", "role": "assistant"}),
    chunk({"reasoning_content": " The", "reasoning": " The"}),
    chunk({"reasoning_content": " user", "reasoning": " user"}),
    chunk({"reasoning_content": ".", "reasoning": ".", "content": " Hello"}),
    chunk({"content": "! How"}),
    chunk({"content": " are you?"}, finish="stop"),
    chunk(None, usage=USAGE),
]


K3_ID = "msg_6f2c1a9e0b7d4e3f8a21c5d0"
K3_HEAD = f'{{"id":"{K3_ID}","object":"chat.completion.chunk","created":1783056000,"model":"kimi-k3",'
K3_TEXT = "".join(f"data: {line}\n\n" for line in [
    K3_HEAD + '"choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]}',
    K3_HEAD + '"choices":[{"index":0,"delta":{"reasoning_content":"The user"},"finish_reason":null}]}',
    K3_HEAD + '"choices":[{"index":0,"delta":{"reasoning_content":" greets me."},"finish_reason":null}]}',
    K3_HEAD + '"choices":[{"index":0,"delta":{"content":"Hello"},"finish_reason":null}]}',
    K3_HEAD + '"choices":[{"index":0,"delta":{"content":"! 你好"},"finish_reason":null}]}',
    K3_HEAD + '"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}',
    K3_HEAD + '"choices":[],"usage":{"prompt_tokens":8,"completion_tokens":30,"total_tokens":38}}',
    "[DONE]",
])
"""The K3 stream through Ace, written out: `msg_` ids, compact JSON, reasoning only as
reasoning_content, the stop in its own empty-delta chunk, then a `choices: []` chunk whose usage has
only the three counts."""


class TestStream:
    def test_k3_stream(self) -> None:
        acc, deltas = feed(K3_TEXT)
        assert acc.done
        assert deltas == [StreamDelta("The user", ""), StreamDelta(" greets me.", ""), StreamDelta("", "Hello"),
                          StreamDelta("", "! 你好")]  # the role chunk and the stop chunk carry no text
        assert (acc.text, acc.reasoning) == ("Hello! 你好", "The user greets me.")
        reply = acc.reply()
        assert (reply.id, reply.model, reply.finish_reason) == (K3_ID, "kimi-k3", "stop")
        usage = reply.usage
        assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (8, 30, 38)
        assert (usage.reasoning_tokens, usage.cached_tokens) == (None, None)  # not sent: unknown, not 0

    def test_the_fake_streams_the_k3_shape(self) -> None:
        """The fake's K3 shape is the one written out above (so the end-to-end tests exercise it)."""
        resp = fake_ace.reply("Hello! 你好", reasoning="The user greets me.", reasoning_tokens=5, chunk_size=4)
        blocks = [b.decode() for b in fake_ace._sse_blocks(resp, {"model": "kimi-k3", "messages": []})]
        chunks = [json.loads(b.removeprefix("data: ")) for b in blocks[:-1]]
        assert blocks[-1] == "data: [DONE]\n\n"
        assert all(", " not in b and '": ' not in b for b in blocks)  # compact JSON (the texts have neither)
        assert {c["id"] for c in chunks} == {chunks[0]["id"]} and chunks[0]["id"].startswith("msg_")
        assert all("reasoning" not in c["choices"][0]["delta"] for c in chunks if c["choices"])
        assert chunks[-2]["choices"] == [{"index": 0, "delta": {}, "finish_reason": "stop"}]
        assert chunks[-1]["choices"] == [] and set(chunks[-1]["usage"]) == {"prompt_tokens", "completion_tokens",
                                                                             "total_tokens"}
        acc, _ = feed("".join(blocks))
        assert (acc.done, acc.text, acc.reasoning) == (True, "Hello! 你好", "The user greets me.")
        assert acc.usage is not None and acc.usage.reasoning_tokens is None

    def test_ace_stream(self) -> None:
        acc, deltas = feed(sse(*ACE_STREAM))
        assert acc.done
        assert acc.text == " Hello! How are you?"
        assert acc.reasoning == " The user."
        assert deltas == [
            StreamDelta(" The", ""), StreamDelta(" user", ""), StreamDelta(".", " Hello"),
            StreamDelta("", "! How"), StreamDelta("", " are you?"),
        ]
        reply = acc.reply()
        assert (reply.id, reply.model, reply.finish_reason) == ("chatcmpl-952dd5e75583c4d1", "kimi-k2.5", "stop")
        assert (reply.usage.prompt_tokens, reply.usage.total_tokens, reply.usage.reasoning_tokens) == (9, 29, 12)
        assert (acc.reasoning_chars, acc.content_chars) == (len(" The user."), len(" Hello! How are you?"))

    def test_moonshot_usage_inside_choice(self) -> None:
        last = chunk({"content": "ok"}, finish="stop")
        last["choices"][0]["usage"] = {"prompt_tokens": 4, "completion_tokens": 2, "total_tokens": 6,
                                       "cached_tokens": 4}
        acc, _ = feed(sse(chunk({"role": "assistant", "content": ""}), last))
        assert acc.text == "ok"
        assert acc.usage is not None
        assert (acc.usage.total_tokens, acc.usage.cached_tokens) == (6, 4)
        # and Moonshot's extra `choices: []` chunk without usage keeps it
        acc, _ = feed(sse(chunk(None)), acc)
        assert acc.usage is not None and acc.usage.total_tokens == 6

    def test_comments_and_crlf(self) -> None:
        acc, deltas = feed(sse(*ACE_STREAM, nl="\r\n", comments=True))
        assert acc.done
        assert acc.text == " Hello! How are you?"
        assert acc.reasoning == " The user."
        assert len(deltas) == 5

    def test_multi_line_data(self) -> None:
        """One event's data lines join with newlines before parsing."""
        text = ('data: {"id": "c1", "model": "m",\ndata: "choices": [{"index": 0, "delta": {"content": "hi"},\n'
                'data: "finish_reason": "stop"}]}\n\ndata: [DONE]\n\n')
        acc, deltas = feed(text)
        assert deltas == [StreamDelta("", "hi")]
        assert (acc.text, acc.finish_reason, acc.id, acc.done) == ("hi", "stop", "c1", True)

    def test_done_only_at_done(self) -> None:
        acc, _ = feed(sse(*ACE_STREAM, done=False))
        assert not acc.done
        assert acc.text == " Hello! How are you?"

    def test_flush_dispatches_unterminated_event(self) -> None:
        acc, _ = feed(f"data: {json.dumps(chunk({'content': 'x'}))}\n")
        assert acc.text == ""
        assert acc.flush() == StreamDelta("", "x")
        assert acc.text == "x"
        acc.feed_line("data: [DONE]")
        acc.flush()
        assert acc.done

    def test_non_json_chunk(self) -> None:
        acc = StreamAccumulator()
        acc.feed_line("data: {not json")
        with pytest.raises(InvalidResponse, match="not JSON"):
            acc.feed_line("")

    @pytest.mark.parametrize("data", ['"a string"', "[1]"])
    def test_bad_chunks(self, data: str) -> None:
        with pytest.raises(InvalidResponse):
            feed(f"data: {data}\n\n")

    @pytest.mark.parametrize(("data", "cls", "retryable"), [
        ('{"error": {"message": "overloaded"}}', UpstreamFailure, True),
        ('{"error": "boom"}', UpstreamFailure, True),
        ('{"error": {"code": "used_up", "message": "Balance used up."}}', InsufficientBalance, False),
        ('{"error": {"type": "rate_limit_reached_error", "message": "slow down"}}', RateLimited, True),
        ('{"error": {"code": "invalid_token", "message": "bad"}}', AuthError, False),
        ('{"error": {"code": "resource_not_found_error", "message": "no model"}}', NotFound, False),
    ])
    def test_error_events_use_the_status_body_map(self, data: str, cls: type[KimiError], retryable: bool) -> None:
        """An error event means what the same code means in a status body (one map for both)."""
        with pytest.raises(cls) as raised:
            feed(f"data: {data}\n\n")
        assert raised.value.retryable is retryable
        assert raised.value.auto_retry is retryable

    def test_ignores_other_fields_and_empty_deltas(self) -> None:
        text = "event: message\nid: 7\nretry: 100\n" + sse(chunk({"content": ""}), chunk({"role": "assistant"}),
                                                          chunk({"content": "z"}))
        _, deltas = feed(text)
        assert deltas == [StreamDelta("", "z")]

    @pytest.mark.parametrize("options", [
        {}, {"moonshot_usage": True}, {"crlf": True, "comments": True}, {"mixed_chunk": False},
        {"chunk_size": 1},
    ])
    def test_fake_shapes(self, options: dict[str, Any]) -> None:
        """The parser reads every shape the loopback fake produces (the fake is held to Ace elsewhere)."""
        resp = fake_ace.reply(" Answer text, twenty+", reasoning="Thinking it over", reasoning_tokens=5, **options)
        text = b"".join(fake_ace._sse_blocks(resp, {"model": "kimi-k2.5", "messages": []})).decode()
        acc, _ = feed(text)
        assert acc.done
        assert acc.text == " Answer text, twenty+"
        assert acc.reasoning == "Thinking it over"
        assert acc.usage is not None and acc.usage.reasoning_tokens == 5
