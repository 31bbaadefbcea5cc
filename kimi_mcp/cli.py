"""The command line: flags from the settings table, then serve on the chosen transport."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from . import __version__
from .catalogue import CATALOGUE, Catalogue
from .settings import OPTIONS, Settings, SettingsError

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    """One flag per setting, each help line naming its variable and default."""
    parser = argparse.ArgumentParser(
        prog="kimi-mcp",
        description="MCP server for Moonshot's Kimi models via Ace Data Cloud. Serves stdio by default.",
        epilog="Every flag can also be set by the environment variable named in its help.",
    )
    parser.add_argument("--version", action="version", version=f"kimi-mcp {__version__}")
    for option in OPTIONS:
        default = "(not set)" if option.secret or not option.default else option.default
        text = f"{option.help} [env {option.env}; default {default}]"
        if option.is_switch:
            parser.add_argument(option.flag, dest=option.field, action="store_const", const="true", help=text)
        else:
            parser.add_argument(option.flag, dest=option.field, metavar=option.env, help=text)
    return parser


def check_models(settings: Settings) -> None:
    """The default model must be one the server accepts, or nothing would work."""
    catalogue = Catalogue(CATALOGUE, settings.extra_models)
    if catalogue.get(settings.default_model) is None:
        raise SettingsError(
            f"invalid setting KIMI_DEFAULT_MODEL: {settings.default_model!r} is not a known model "
            f"(known: {', '.join(catalogue.ids)}; add new ids with KIMI_EXTRA_MODELS)"
        )


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = Settings.load(os.environ, vars(args))
        check_models(settings)
        from .serve import serve

        return serve(settings)
    except SettingsError as exc:
        print(f"kimi-mcp: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
