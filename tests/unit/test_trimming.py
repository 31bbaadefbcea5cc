"""History trimming in `kimi_mcp.chat.conversations`: the token estimate, and `trim_history`, which
drops the oldest whole exchanges to fit the context window (never starting on an assistant turn,
counting reasoning and the answer's reserve), in large steps that keep the prefix stable."""

from __future__ import annotations

from itertools import pairwise

from kimi_mcp.catalogue import ModelInfo
from kimi_mcp.chat.conversations import estimate_tokens, trim_history
from kimi_mcp.upstream.wire import Message
from tests.unit.samples import model


def small_model(window: int) -> ModelInfo:
    return ModelInfo("tiny", "test", context_window=window)


class TestTrimHistory:
    def test_estimate_tokens(self) -> None:
        assert estimate_tokens("") == 1
        assert estimate_tokens("abcd" * 100) == 101
        assert estimate_tokens("你好") == 3
        assert estimate_tokens("ab你好") == 3 + 0  # 2 ASCII chars round down to 0 tokens

    def test_fits_nothing_dropped(self) -> None:
        history = [Message("user", "q1"), Message("assistant", "a1")]
        kept, dropped = trim_history(history, [Message("user", "q2")], model("kimi-k2.5"), None, True)
        assert (kept, dropped) == (history, 0)

    def test_drops_oldest_whole_exchanges(self) -> None:
        """Each turn costs 25 + 1 (empty reasoning) + 4 = 31 tokens; the window leaves room for two of six."""
        turn = "x" * 100
        history = [Message(role, f"{turn}") for role in ("user", "assistant") * 3]
        fixed = [Message("user", "q")]  # 0 + 1 + 4 = 5
        window = 10 + 5 + 62  # max_tokens reserve, fixed, two turns
        kept, dropped = trim_history(history, fixed, small_model(window), 10, False)
        assert dropped == 4
        assert kept == history[4:]
        assert kept[0].role == "user"

    def test_never_starts_with_assistant(self) -> None:
        history = [Message("user", "u" * 100), Message("assistant", "a" * 100), Message("assistant", "b" * 100),
                   Message("user", "v" * 100), Message("assistant", "c" * 100)]
        kept, dropped = trim_history(history, [], small_model(10 + 62), 10, False)
        assert dropped == 3
        assert [m.content[0] for m in kept] == ["v", "c"]

    def test_reasoning_counts_and_reserve(self) -> None:
        history = [Message("user", "u"), Message("assistant", "a", reasoning="r" * 400)]
        kept, dropped = trim_history(history, [], small_model(4096 + 50), None, False)
        assert dropped == 2 and kept == []
        # thinking models reserve more for the answer when max_tokens is not given
        kept, dropped = trim_history([Message("user", "u")], [], small_model(4096 + 50), None, True)
        assert dropped == 1

    def test_the_cut_moves_in_large_steps_as_the_conversation_grows(self) -> None:
        """At the window's limit a growing conversation keeps its cut (so its cached prefix) for many
        calls, and every history sent fits; cutting one exchange per call would move it every call."""
        window = 10 + 5 + 31 * 40  # reserve, fixed, room for 40 turns (20 exchanges)
        fixed = [Message("user", "q")]
        history: list[Message] = []
        cuts: list[int] = []
        for n in range(100):
            history += [Message("user", f"{n:02d}" + "u" * 98), Message("assistant", "a" * 100)]
            kept, dropped = trim_history(history, fixed, small_model(window), 10, False)
            assert kept == history[dropped:] and (not kept or kept[0].role == "user")
            assert sum(estimate_tokens(m.content) + 1 + 4 for m in kept) <= 31 * 40
            cuts.append(dropped)
        assert cuts == sorted(cuts)  # the cut only ever moves forward
        moves = sum(1 for a, b in pairwise(cuts) if a != b)
        assert 0 < moves <= 100 // 8, cuts  # each move frees room for 8 or more exchanges
        assert len(history) - cuts[-1] >= 2 * 10  # a long history is still sent
