"""Settings: one table of options, read once from flags and the environment.

Each option is data (its variable, flag, parser, default and help), so the command line, the
environment reader, `--help`, `server.json` and the docs all come from the same table.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

__all__ = ["OPTIONS", "TOKEN_PLACEHOLDER", "Option", "Secret", "Settings", "SettingsError"]


class SettingsError(ValueError):
    """A malformed setting; the message names the setting and stops start-up in one line."""


class Secret:
    """A string that never shows itself in a repr, str, log line or traceback."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """The real value: only for the Authorization header and redaction."""
        return self._value

    def __repr__(self) -> str:
        return "Secret('****')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


# --- parsers: each turns a raw string into a value or raises ValueError with a short reason ---


def _text(raw: str) -> str:
    return raw.strip()


TOKEN_PLACEHOLDER = "<your-ace-token>"
"""What `kimi-mcp config` writes instead of a token: it counts as not set."""


def _secret(raw: str) -> Secret | None:
    value = raw.strip()
    return Secret(value) if value and value != TOKEN_PLACEHOLDER else None


def _http_url(raw: str) -> str:
    value = raw.strip().rstrip("/")
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"{raw!r} is not an http(s) URL")
    return value


def _number(minimum: float, maximum: float = math.inf) -> Callable[[str], float]:
    def parse(raw: str) -> float:
        try:
            value = float(raw)
        except ValueError:
            raise ValueError(f"{raw!r} is not a number") from None
        if not (minimum <= value <= maximum) or math.isnan(value):
            raise ValueError(f"{raw!r} is out of range ({minimum:g} to {maximum:g})")
        return value

    return parse


def _integer(minimum: int, maximum: int) -> Callable[[str], int]:
    def parse(raw: str) -> int:
        try:
            value = int(raw)
        except ValueError:
            raise ValueError(f"{raw!r} is not a whole number") from None
        if not minimum <= value <= maximum:
            raise ValueError(f"{raw!r} is out of range ({minimum} to {maximum})")
        return value

    return parse


def _id_list(raw: str) -> tuple[str, ...]:
    return tuple(dict.fromkeys(part.strip() for part in raw.split(",") if part.strip()))


def _choice(*choices: str) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        value = raw.strip()
        folded = {c.lower(): c for c in choices}
        if value.lower() not in folded:
            raise ValueError(f"{raw!r} is not one of {', '.join(choices)}")
        return folded[value.lower()]

    return parse


def _flag(raw: str) -> bool:
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"{raw!r} is not true or false")


@dataclass(frozen=True, slots=True)
class Option:
    """One setting: where it comes from, how it is parsed, what it means."""

    field: str
    env: str
    flag: str
    parse: Callable[[str], Any]
    default: str
    help: str
    secret: bool = False
    is_switch: bool = False


OPTIONS: tuple[Option, ...] = (
    Option("api_token", "ACEDATACLOUD_API_TOKEN", "--api-token", _secret, "",
           "Ace Data Cloud API token (get one at https://platform.acedata.cloud).", secret=True),
    Option("base_url", "ACEDATACLOUD_API_BASE_URL", "--base-url", _http_url, "https://api.acedata.cloud",
           "Base URL of the Ace Data Cloud API."),
    Option("request_timeout", "KIMI_REQUEST_TIMEOUT", "--request-timeout", _number(1, 86_400), "900",
           "Overall seconds one upstream call may take (thinking models can take minutes)."),
    Option("default_model", "KIMI_DEFAULT_MODEL", "--default-model", _text, "kimi-k3",
           "Model used when a call names none."),
    Option("extra_models", "KIMI_EXTRA_MODELS", "--extra-models", _id_list, "",
           "Comma-separated model ids accepted beyond the built-in catalogue."),
    Option("log_level", "LOG_LEVEL", "--log-level",
           _choice("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"), "INFO",
           "Log level (logs go to stderr)."),
    Option("log_format", "KIMI_LOG_FORMAT", "--log-format", _choice("plain", "json"), "plain",
           "Log line format: plain text, or json (one JSON object per line, for log collectors)."),
    Option("transport", "KIMI_TRANSPORT", "--transport", _choice("stdio", "streamable-http", "sse"), "stdio",
           "How hosts reach the server: stdio, streamable-http (/mcp) or sse (/sse)."),
    Option("host", "KIMI_HOST", "--host", _text, "127.0.0.1", "Address the HTTP transports bind."),
    Option("port", "KIMI_PORT", "--port", _integer(0, 65_535), "8000", "Port the HTTP transports bind."),
    # conversations and host deadlines
    Option("store", "KIMI_STORE", "--store", _text, "",
           "Conversation store: a SQLite file path, a postgresql:// URL (several replicas), 'memory' to "
           "keep nothing on disk, or 'none' to keep no conversation at all (default: conversations.sqlite3 "
           "in the user's data directory)."),
    Option("soft_deadline", "KIMI_SOFT_DEADLINE", "--soft-deadline", _number(0, 86_400), "50",
           "Seconds after which kimi_chat returns the partial answer and keeps generating (0: off)."),
    Option("conversation_ttl_days", "KIMI_CONVERSATION_TTL_DAYS", "--conversation-ttl-days",
           _number(0, 36_500), "30", "Days a conversation is kept after its last use (0: forever)."),
    Option("max_turns", "KIMI_MAX_TURNS", "--max-turns", _integer(2, 100_000), "200",
           "Turns kept per conversation; past it the oldest go, down to three quarters of it at once."),
    Option("max_conversation_bytes", "KIMI_MAX_CONVERSATION_BYTES", "--max-conversation-bytes",
           _integer(1_000, 1_000_000_000), "2000000",
           "Stored bytes per conversation; past it the oldest turns go, down to three quarters of it at once."),
    # resilience
    Option("max_retries", "KIMI_MAX_RETRIES", "--max-retries", _integer(0, 10), "3",
           "Retries of a failed upstream call (429, 5xx, connection failures only)."),
    Option("max_concurrency", "KIMI_MAX_CONCURRENCY", "--max-concurrency", _integer(1, 10_000), "50",
           "Upstream requests at once; further calls wait in arrival order."),
    Option("connect_timeout", "KIMI_CONNECT_TIMEOUT", "--connect-timeout", _number(0.1, 600), "10",
           "Seconds to open a connection to the upstream."),
    Option("first_byte_timeout", "KIMI_FIRST_BYTE_TIMEOUT", "--first-byte-timeout", _number(0.1, 86_400), "600",
           "Seconds to wait for the upstream's first answer byte."),
    Option("idle_timeout", "KIMI_IDLE_TIMEOUT", "--idle-timeout", _number(0.1, 86_400), "120",
           "Seconds a stream may stay silent before it is aborted."),
    # HTTP transports: who may call
    Option("auth_tokens", "KIMI_MCP_AUTH_TOKENS", "--auth-tokens", _secret, "",
           "Client tokens for the HTTP transports, as name:token pairs separated by commas.", secret=True),
    Option("auth_tokens_file", "KIMI_MCP_AUTH_TOKENS_FILE", "--auth-tokens-file", _text, "",
           "A file of name:token lines (same format as KIMI_MCP_AUTH_TOKENS)."),
    Option("allow_unauthenticated", "KIMI_ALLOW_UNAUTHENTICATED", "--allow-unauthenticated", _flag, "false",
           "Serve a non-loopback address without client auth (you must mean it).", is_switch=True),
    Option("allowed_origins", "KIMI_ALLOWED_ORIGINS", "--allowed-origins", _id_list, "",
           "Extra Origin values the HTTP transports accept (comma-separated)."),
    Option("allowed_hosts", "KIMI_ALLOWED_HOSTS", "--allowed-hosts", _id_list, "",
           "Extra Host values the HTTP transports accept (comma-separated, host:port or host:*)."),
    Option("max_request_bytes", "KIMI_MAX_REQUEST_BYTES", "--max-request-bytes", _integer(1_024, 1_073_741_824),
           "4194304", "Largest HTTP request body accepted from a client."),
    Option("task_wait", "KIMI_TASK_WAIT", "--task-wait", _number(0, 5), "3",
           "Seconds a call from a tasks-capable client waits before it becomes a task (quick answers stay direct)."),
    Option("task_ttl", "KIMI_TASK_TTL", "--task-ttl", _number(60, 604_800), "3600",
           "Seconds a task's result is kept for polling after it was last updated."),
    Option("answer_lease", "KIMI_ANSWER_LEASE", "--answer-lease", _number(1, 3_600), "30",
           "Seconds an answer in progress may go without its process's heartbeat before another "
           "process sharing the store reports it interrupted (the process died)."),
    Option("client_timeout", "KIMI_CLIENT_TIMEOUT", "--client-timeout", _number(0.5, 3_600), "30",
           "Seconds an HTTP client may take to send its request headers, or stay silent mid-body."),
    Option("max_sessions_per_client", "KIMI_MAX_SESSIONS_PER_CLIENT", "--max-sessions-per-client",
           _integer(1, 10_000), "100", "Open legacy (2025-11-25) Streamable HTTP sessions allowed per client."),
    # operations
    Option("metrics", "KIMI_METRICS", "--metrics", _flag, "false",
           "Serve Prometheus metrics at /metrics on the HTTP transports, behind the same checks and client "
           "tokens as /mcp (needs kimi-mcp[metrics]).", is_switch=True),
    Option("metrics_open", "KIMI_METRICS_OPEN", "--metrics-open", _flag, "false",
           "Serve /metrics to anyone who can reach the port, without client tokens or Host checks "
           "(a private scrape network).", is_switch=True),
    # local files the tools may read
    Option("allowed_dirs", "KIMI_ALLOWED_DIRS", "--allowed-dirs", _id_list, "",
           "Directories whose files kimi_chat and kimi_json may read (comma-separated; default: the working "
           "directory over stdio, none over HTTP)."),
    # cost estimates
    Option("prices", "KIMI_PRICES", "--prices", _text, "",
           "A JSON price table (USD per 1M tokens, per model) for cost estimates, replacing the built-in "
           "Moonshot list prices (Ace publishes none)."),
)


@dataclass(frozen=True, slots=True)
class Settings:
    """Every setting the server reads, parsed and checked; built once at start-up."""

    api_token: Secret | None = None
    base_url: str = "https://api.acedata.cloud"
    request_timeout: float = 900.0
    default_model: str = "kimi-k3"
    extra_models: tuple[str, ...] = ()
    log_level: str = "INFO"
    log_format: str = "plain"
    transport: str = "stdio"
    host: str = "127.0.0.1"
    port: int = 8000
    store: str = ""
    soft_deadline: float = 50.0
    conversation_ttl_days: float = 30.0
    max_turns: int = 200
    max_conversation_bytes: int = 2_000_000
    max_retries: int = 3
    max_concurrency: int = 50
    connect_timeout: float = 10.0
    first_byte_timeout: float = 600.0
    idle_timeout: float = 120.0
    auth_tokens: Secret | None = None
    auth_tokens_file: str = ""
    allow_unauthenticated: bool = False
    allowed_origins: tuple[str, ...] = ()
    allowed_hosts: tuple[str, ...] = ()
    max_request_bytes: int = 4_194_304
    task_wait: float = 3.0
    task_ttl: float = 3600.0
    answer_lease: float = 30.0
    client_timeout: float = 30.0
    max_sessions_per_client: int = 100
    metrics: bool = False
    metrics_open: bool = False
    allowed_dirs: tuple[str, ...] = ()
    prices: str = ""

    @classmethod
    def load(cls, env: Mapping[str, str], flags: Mapping[str, str | None] | None = None) -> Settings:
        """Flags win over the environment, which wins over defaults; the first bad value raises."""
        values: dict[str, Any] = {}
        for option in OPTIONS:
            raw = (flags or {}).get(option.field)
            source = option.flag
            if raw is None:
                raw, source = env.get(option.env), option.env
            if raw is None:
                raw, source = option.default, f"the default of {option.env}"
            try:
                values[option.field] = option.parse(raw)
            except ValueError as exc:
                shown = "(hidden)" if option.secret else str(exc)
                raise SettingsError(f"invalid setting {source}: {shown}") from None
        return cls(**values)

    def secrets(self) -> tuple[str, ...]:
        """Every secret value, for redaction."""
        values = (getattr(self, o.field) for o in OPTIONS if o.secret)
        found = [v.reveal() for v in values if isinstance(v, Secret)]
        if self.auth_tokens:
            found += [pair.partition(":")[2] for pair in self.auth_tokens.reveal().split(",")]
        found += store_passwords(self.store)
        return tuple(v.strip() for v in found if v.strip())

    def __repr__(self) -> str:
        return f"Settings({self.masked()!r})"

    def masked(self) -> dict[str, Any]:
        """The settings as a dict fit for a log line: the token shows only whether it is set."""
        shown = dataclasses.asdict(self)
        for option in OPTIONS:
            if option.secret:
                shown[option.field] = "set (****)" if getattr(self, option.field) else "not set"
        for password in sorted(store_passwords(self.store), key=len, reverse=True):
            shown["store"] = shown["store"].replace(password, "****")
        return shown


def store_passwords(store: str) -> list[str]:
    """The password in a PostgreSQL store URL (as written and decoded; in the user part or a
    `password=` parameter), so it is masked like the tokens: KIMI_STORE is not a secret option, but
    such a URL holds one."""
    if not store.startswith(("postgresql://", "postgres://")):
        return []
    parts = urlsplit(store)
    raw = [parts.netloc.rpartition("@")[0].partition(":")[2]]
    raw += [value for name, _, value in (item.partition("=") for item in parts.query.split("&"))
            if unquote(name) == "password"]
    return [spelling for value in raw if value for spelling in dict.fromkeys((value, unquote(value)))]
