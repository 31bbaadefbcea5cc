"""`kimi-mcp chat`: one question from the terminal, through the same code as the kimi_chat tool.

The answer streams to stdout as it arrives; reasoning (with --reasoning), status and the
conversation id go to stderr, so `kimi-mcp chat ... > answer.md` keeps only the answer. Every
plain answer is stored as a conversation of the local principal (the one stdio hosts use), so
it can be continued here with --conversation, or by a host.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TextIO

import anyio

from ..catalogue import catalogue_for
from ..chat import LOCAL, ChatArgs, empty_answer_notice
from ..errors import KimiError
from ..prices import format_usd
from ..redaction import redact, setup_logging
from ..settings import Settings
from ..upstream import StreamAccumulator
from .term import Painter

__all__ = ["ChatOptions", "TerminalStream", "run_chat"]


@dataclass(frozen=True, slots=True)
class ChatOptions:
    prompt: str
    model: str | None = None
    system: str | None = None
    conversation: str | None = None
    json: bool = False
    schema: str | None = None
    reasoning: bool = False
    max_tokens: int | None = None
    thinking: Literal["enabled", "disabled"] | None = None


_COMMAND_WORDS = (
    ("leave conversation_id out", "leave --conversation out"),
    ("conversation_id", "--conversation"),
    ("a larger max_tokens", "a larger --max-tokens"),
    ("(max_tokens)", "(--max-tokens)"),
    ("fix the arguments and call again", "fix the command and run it again"),
)


def command_words(text: str) -> str:
    """A message written for a host's model (tool argument names), in this command's words (flags)."""
    for tool_words, flag_words in _COMMAND_WORDS:
        text = text.replace(tool_words, flag_words)
    return text


class UsageError(Exception):
    """A command-line mistake found after parsing (exit status 2)."""


class TerminalStream:
    """A `StreamListener` that writes each new piece of the answer to stdout as it arrives, and the
    reasoning (when asked) dimmed to stderr."""

    def __init__(self, out: Painter, err: Painter, *, show_reasoning: bool, status: bool | None = None) -> None:
        self.out = out
        self.err = err
        self.show_reasoning = show_reasoning
        # A dim, overwritten "thinking..." line on a terminal, so a thinking model is never a blank screen.
        self.status_line = err.is_terminal() if status is None else status
        self._status_shown = False
        self._acc: StreamAccumulator | None = None
        self._text = 0
        self._reasoning = 0
        self._in_reasoning = False
        self._last_char = "\n"

    async def update(self, acc: StreamAccumulator) -> None:
        if acc is not self._acc:  # a new attempt starts from nothing
            self._acc, self._text, self._reasoning = acc, 0, 0
        if not self.show_reasoning and self.status_line and not acc.content_chars and acc.reasoning_chars:
            self.err.write("\r\x1b[2K" + self.err.style(f"thinking… {acc.reasoning_chars:,} characters", "dim"))
            self._status_shown = True
        if self.show_reasoning and acc.reasoning_chars > self._reasoning:
            if not self._in_reasoning:
                self.err.write(self.err.start("dim"))
                self._in_reasoning = True
            self.err.write(acc.reasoning[self._reasoning:])
            self._reasoning = acc.reasoning_chars
        if acc.content_chars > self._text:
            self._clear_status()
            self._end_reasoning()
            piece = acc.text[self._text:]
            self.out.write(piece)
            self._text = acc.content_chars
            self._last_char = piece[-1]

    def new_attempt(self) -> None:
        """Nothing to do: `update` notices a new accumulator by itself."""

    async def status(self, message: str) -> None:
        self.err.write(self.err.style(f"[{message}]", "dim") + "\n")

    async def flush(self) -> None:
        self._end_reasoning()

    def _clear_status(self) -> None:
        if self._status_shown:
            self.err.write("\r\x1b[2K")
            self._status_shown = False

    def _end_reasoning(self) -> None:
        if self._in_reasoning:
            self.err.write(self.err.end() + "\n\n")
            self._in_reasoning = False

    def finish(self) -> None:
        """End the answer with a newline, so the shell prompt starts on its own line."""
        self._clear_status()
        self._end_reasoning()
        if self._last_char != "\n":
            self.out.write("\n")
            self._last_char = "\n"


def _cost(usd: float | None) -> str:
    """An estimated cost as the last line shows it (labelled an estimate: Ace publishes no prices)."""
    return "cost unknown (no price for the model)" if usd is None else f"~{format_usd(usd)} estimated"


def _read_prompt(prompt: str, stdin: TextIO) -> str:
    if prompt != "-":
        return prompt
    text = stdin.read()
    if not text.strip():
        raise UsageError("the prompt read from standard input is empty")
    return text


def _read_schema(raw: str | None) -> Any:
    """--schema: inline JSON (starting with '{'), or the path of a file that holds it."""
    if raw is None:
        return None
    text = raw
    if not raw.lstrip().startswith("{"):
        try:
            text = Path(raw).expanduser().read_text(encoding="utf-8")
        except OSError as exc:
            raise UsageError(f"--schema: cannot read {raw}: {exc.strerror or exc}") from None
    try:
        return json.loads(text)
    except ValueError as exc:
        raise UsageError(f"--schema is not valid JSON: {exc}") from None


async def _ask(settings: Settings, options: ChatOptions, args: ChatArgs, schema: Any, out: Painter,
               err: Painter) -> int:
    from ..runtime import open_runtime
    from ..store import new_conversation_id

    secrets = settings.secrets()
    stream = TerminalStream(out, err, show_reasoning=options.reasoning)
    async with open_runtime(settings, catalogue_for(settings)) as tools:
        try:
            if options.json:
                outcome = await tools.json(args, schema, None)
                out.write(json.dumps(outcome.value, indent=2, ensure_ascii=False) + "\n")
                return 0
            cid = options.conversation or new_conversation_id()
            turn = await tools.conversations.run(LOCAL, cid, args, continuing=options.conversation is not None,
                                                 listener=stream)
        except KimiError as error:
            stream.finish()
            err.write(err.style("kimi-mcp: " + command_words(redact(error.line(), secrets)), "red") + "\n")
            return 1
    stream.finish()
    reply = turn.completed.reply
    request = turn.completed.request
    empty = empty_answer_notice(reply, request.model.thinks(request.thinking))
    notes = [n for n in (empty, *turn.notices) if n]
    if reply.finish_reason == "length" and reply.text.strip():
        notes.append("The answer was cut at max_tokens; raise --max-tokens for the rest.")
    for note in notes:
        err.write(err.style(command_words(note), "yellow") + "\n")
    used = f"{reply.model or request.model.id}, {reply.usage.total_tokens} tokens, {_cost(turn.completed.cost_usd)}"
    if turn.totals is not None and options.conversation is not None:  # a continued one: what it cost so far
        total = turn.totals.prompt_tokens + turn.totals.completion_tokens
        unpriced = turn.totals.cost_usd == 0 and turn.totals.unpriced_calls > 0
        used += f"; conversation so far {total} tokens, {_cost(None if unpriced else turn.totals.cost_usd)}"
    kept = "" if settings.store == "memory" else f"; continue with: kimi-mcp chat --conversation {cid} PROMPT"
    err.write(err.style(f"conversation: {cid} ({used}{kept})", "dim") + "\n")
    return 1 if empty else 0  # no answer text at all is not a success


def run_chat(settings: Settings, options: ChatOptions, *, stdin: TextIO | None = None,
             stdout: TextIO | None = None, stderr: TextIO | None = None) -> int:
    """Ask once and print the answer; 0 on success, 1 when the call failed, 2 on a usage mistake."""
    out = Painter(stdout if stdout is not None else sys.stdout)
    err = Painter(stderr if stderr is not None else sys.stderr)
    try:
        if options.json and options.conversation:
            raise UsageError("--json answers are not stored in conversations: leave out --conversation or --json")
        prompt = _read_prompt(options.prompt, stdin if stdin is not None else sys.stdin)
        schema = _read_schema(options.schema)
    except UsageError as exc:
        err.write(f"kimi-mcp chat: {exc}\n")
        return 2
    # The terminal is for the answer: only warnings and worse are logged (to stderr, redacted).
    level = "WARNING" if settings.log_level == "INFO" else settings.log_level
    setup_logging(level, settings.secrets())
    args = ChatArgs(prompt=prompt, system=options.system, model=options.model, max_tokens=options.max_tokens,
                    thinking=options.thinking)
    try:
        return anyio.run(_ask, settings, options, args, schema, out, err)
    except KeyboardInterrupt:
        err.write(err.end() + "\n")
        return 130
