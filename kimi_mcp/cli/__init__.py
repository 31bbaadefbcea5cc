"""The command line: `serve` (the default), `doctor`, `config` and `chat`, each taking the settings flags.

`kimi-mcp` alone, or with settings flags only, serves stdio; the other commands print to the
user's terminal and are imported only when chosen, so the serve path stays lean. One module per
command. The top layer: may import every other package; nothing imports it.
"""

from __future__ import annotations

import argparse
import os
import sys
import textwrap
from collections.abc import Sequence
from typing import Any, Literal

from .. import __version__
from ..catalogue import catalogue_for
from ..prices import prices_for
from ..settings import OPTIONS, Settings, SettingsError

__all__ = ["build_parser", "explicit_flags", "main"]

HOSTS = ("claude-desktop", "claude-code", "vscode", "cursor")
THINKING: dict[str | None, Literal["enabled", "disabled"] | None] = {"on": "enabled", "off": "disabled", None: None}
SETTINGS_TITLE = "settings (each can also be set by the environment variable named in its help)"


def _add_settings(parser: argparse.ArgumentParser | Any, *, suppress: bool) -> None:
    """One flag per setting, each help line naming its variable and default.

    Subcommands leave an absent flag out of the namespace (SUPPRESS), so a flag given before the
    subcommand is not overwritten by the subcommand's default.
    """
    default = argparse.SUPPRESS if suppress else None
    for option in OPTIONS:
        shown = "(not set)" if option.secret or not option.default else option.default
        text = f"{option.help} [env {option.env}; default {shown}]"
        if option.is_switch:
            parser.add_argument(option.flag, dest=option.field, action="store_const", const="true",
                                default=default, help=text)
        else:
            parser.add_argument(option.flag, dest=option.field, metavar=option.env, default=default, help=text)


class _Formatter(argparse.HelpFormatter):
    """Wraps each line of a description or epilog on its own; indented lines (examples) stay as they are."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        lines: list[str] = []
        for line in text.splitlines():
            if not line or line.startswith(" "):
                lines.append(indent + line)
            else:
                lines += textwrap.wrap(line, width, initial_indent=indent, subsequent_indent=indent)
        return "\n".join(lines)


def _subcommand(subparsers: Any, name: str, usage: str, summary: str, description: str, epilog: str = "") -> Any:
    return subparsers.add_parser(
        name, usage=f"%(prog)s {usage}[options]", help=summary, description=description,
        epilog=epilog or None, formatter_class=_Formatter,
    )


def _positive_int(raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{raw!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{raw!r} must be at least 1")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser (settings flags, serving by default) and one sub-parser per command."""
    parser = argparse.ArgumentParser(
        prog="kimi-mcp",
        description=(
            "MCP server for Moonshot's Kimi models via Ace Data Cloud. Serves stdio by default; "
            "`kimi-mcp doctor` checks a setup, `kimi-mcp config HOST` prints a host's configuration, "
            "`kimi-mcp chat PROMPT` asks Kimi from the terminal."
        ),
        epilog="Every flag can also be set by the environment variable named in its help.",
    )
    parser.add_argument("--version", action="version", version=f"kimi-mcp {__version__}")
    _add_settings(parser, suppress=False)
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")

    serve = _subcommand(
        subparsers, "serve", "", "serve MCP on stdio or HTTP (the default command)",
        "Serve MCP on the chosen transport (stdio unless --transport says otherwise). "
        "This is what `kimi-mcp` without a command does.",
    )
    _add_settings(serve.add_argument_group(SETTINGS_TITLE), suppress=True)

    doctor = _subcommand(
        subparsers, "doctor", "", "check the settings, the token, the connection and one real call",
        "Check this setup step by step and say what to fix: the settings, the API token, the base URL, "
        "the conversation store, and one small real call to Kimi (a few tokens, billed as usual).\n"
        "Exit status 0 when every check passed, 1 otherwise.",
    )
    doctor.add_argument("--model", help="model for the test call (default: KIMI_DEFAULT_MODEL, made cheap: "
                                         "thinking off or low effort)")
    doctor.add_argument("--no-call", action="store_true", help="skip the real call (no tokens used)")
    _add_settings(doctor.add_argument_group(SETTINGS_TITLE), suppress=True)

    config = _subcommand(
        subparsers, "config", "HOST ", "print (or write) the configuration for an MCP host",
        "Print the configuration that runs this kimi-mcp from an MCP host, or merge it into the host's "
        "config file with --write (keeping every other server and key, after a timestamped backup).\n"
        "The token is a placeholder unless --with-token. Settings flags given here (e.g. "
        "--default-model) are written into the entry's environment.",
        epilog="examples:\n  kimi-mcp config claude-desktop --write\n  kimi-mcp config vscode\n"
               "  kimi-mcp config claude-code --uvx",
    )
    config.add_argument("target", metavar="HOST", choices=HOSTS, help=f"one of: {', '.join(HOSTS)}")
    config.add_argument("--uvx", action="store_true", help="run the server with `uvx kimi-mcp` instead of "
                                                            "this installation's executable")
    config.add_argument("--with-token", action="store_true",
                        help="include the token from ACEDATACLOUD_API_TOKEN (or --api-token) instead of a "
                             "placeholder")
    config.add_argument("--write", action="store_true",
                        help="merge the entry into the host's config file for this user (not for claude-code)")
    config.add_argument("--config-path", metavar="PATH", help="the config file to write (default: the host's "
                                                              "usual file for this user)")
    config.add_argument("--name", default="kimi", help="the server's name in the host (default: kimi)")
    _add_settings(config.add_argument_group(SETTINGS_TITLE), suppress=True)

    chat = _subcommand(
        subparsers, "chat", "PROMPT ", "ask Kimi from the terminal (streams the answer)",
        "Ask Kimi once and stream the answer to the terminal, through the same code as the kimi_chat tool. "
        "Every answer is stored as a conversation; its id is printed at the end (on stderr) so you can "
        "continue it with --conversation.",
        epilog="examples:\n  kimi-mcp chat \"Explain CRDTs in three sentences\"\n"
               "  git diff | kimi-mcp chat - --system \"Review this diff\"\n"
               "  kimi-mcp chat --json \"List three prime numbers as a JSON array\"",
    )
    chat.add_argument("prompt", help="what to ask; '-' reads it from standard input")
    chat.add_argument("--model", help="model id (default: KIMI_DEFAULT_MODEL)")
    chat.add_argument("--system", metavar="TEXT", help="system prompt")
    chat.add_argument("--conversation", metavar="ID", help="continue this stored conversation")
    chat.add_argument("--json", action="store_true", help="ask for a JSON answer and print it (kimi_json)")
    chat.add_argument("--schema", metavar="SCHEMA",
                      help="JSON Schema the answer must match: inline JSON or a file path (implies --json)")
    chat.add_argument("--reasoning", action="store_true", help="show the model's reasoning (dimmed, on stderr)")
    chat.add_argument("--max-tokens", type=_positive_int, metavar="N", help="cap the answer's tokens")
    chat.add_argument("--thinking", choices=("on", "off"), help="switch thinking on or off (models with a switch)")
    _add_settings(chat.add_argument_group(SETTINGS_TITLE), suppress=True)
    return parser


def explicit_flags(args: argparse.Namespace) -> dict[str, str]:
    """The settings given as flags (field -> raw value), wherever they were on the command line."""
    return {o.field: value for o in OPTIONS if isinstance(value := getattr(args, o.field, None), str)}


def _run(command: str, args: argparse.Namespace) -> int:
    flags: dict[str, str | None] = dict(explicit_flags(args))
    if command == "doctor":
        from .doctor import run_doctor

        return run_doctor(os.environ, flags, model=args.model, call=not args.no_call)
    settings = Settings.load(os.environ, flags)
    catalogue_for(settings)  # refuses an unknown default model before anything starts
    prices_for(settings)  # and an unusable KIMI_PRICES table
    if command == "config":
        from .config import ConfigOptions, run_config

        return run_config(settings, ConfigOptions(
            host=args.target, name=args.name, uvx=args.uvx, with_token=args.with_token, write=args.write,
            config_path=args.config_path, flags=explicit_flags(args),
        ))
    if command == "chat":
        from .chat import ChatOptions, run_chat

        return run_chat(settings, ChatOptions(
            prompt=args.prompt, model=args.model, system=args.system, conversation=args.conversation,
            json=args.json or args.schema is not None, schema=args.schema, reasoning=args.reasoning,
            max_tokens=args.max_tokens, thinking=THINKING[args.thinking],
        ))
    from .serve import serve

    return serve(settings)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    command: str = args.command or "serve"
    try:
        return _run(command, args)
    except SettingsError as exc:
        print(f"kimi-mcp: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        if command == "serve":
            raise
        # The reader of a command's output went away (e.g. `| head`): stop quietly.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


if __name__ == "__main__":
    sys.exit(main())
