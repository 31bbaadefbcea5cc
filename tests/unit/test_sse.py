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


class TestStream:
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
