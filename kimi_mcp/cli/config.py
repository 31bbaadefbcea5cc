"""`kimi-mcp config HOST`: the entry that runs this kimi-mcp from an MCP host, printed or merged in.

Claude Desktop and Cursor read `{"mcpServers": {name: {command, args, env}}}`; VS Code reads
`{"servers": {name: {"type": "stdio", ...}}, "inputs": [...]}` and can prompt for the token
(`${input:...}`); Claude Code is configured with its own `claude mcp add` command.

`--write` keeps everything already in the file, backs it up first (timestamped), writes a temp
file and renames it over the original, and refuses a file that is not valid JSON.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import stat
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from ..settings import OPTIONS, TOKEN_PLACEHOLDER, Settings
from .term import Painter

__all__ = [
    "PLACEHOLDER",
    "ConfigError",
    "ConfigOptions",
    "Merged",
    "WriteOutcome",
    "claude_code_command",
    "default_config_path",
    "merge_entry",
    "run_config",
    "server_command",
    "snippet",
    "write_config",
]

PLACEHOLDER = TOKEN_PLACEHOLDER
TOKEN_ENV = "ACEDATACLOUD_API_TOKEN"
VSCODE_INPUT_ID = "ace-token"
VSCODE_INPUT = {
    "type": "promptString",
    "id": VSCODE_INPUT_ID,
    "description": "Ace Data Cloud API token (https://platform.acedata.cloud)",
    "password": True,
}
HOST_NAMES = {
    "claude-desktop": "Claude Desktop",
    "claude-code": "Claude Code",
    "vscode": "VS Code",
    "cursor": "Cursor",
}
# Settings that only matter to the HTTP transports: a host starts kimi-mcp over stdio.
HTTP_ONLY = frozenset({
    "transport", "host", "port", "auth_tokens", "auth_tokens_file", "allow_unauthenticated",
    "allowed_origins", "allowed_hosts", "max_request_bytes",
})


class ConfigError(Exception):
    """The configuration cannot be produced or written; the message says why and what to do."""


@dataclass(frozen=True, slots=True)
class ConfigOptions:
    host: str
    name: str = "kimi"
    uvx: bool = False
    with_token: bool = False
    write: bool = False
    config_path: str | None = None
    flags: Mapping[str, str] = field(default_factory=dict)
    """Settings given as flags (field -> raw value): written into the entry's environment."""


@dataclass(frozen=True, slots=True)
class Merged:
    """The document after `merge_entry`, whether an entry of that name was replaced, and whether the
    real token of that entry was kept instead of the placeholder."""

    document: dict[str, Any]
    replaced: bool
    kept_token: bool


@dataclass(frozen=True, slots=True)
class WriteOutcome:
    path: Path
    backup: Path | None
    replaced: bool
    kept_token: bool = False


def server_command(uvx: bool = False) -> list[str]:
    """How a host starts this installation: its `kimi-mcp` executable by absolute path, else
    `python -m kimi_mcp` with this interpreter; `uvx kimi-mcp` when asked."""
    if uvx:
        return ["uvx", "kimi-mcp"]
    name = "kimi-mcp.exe" if sys.platform == "win32" else "kimi-mcp"
    launched = Path(sys.argv[0]) if sys.argv and sys.argv[0] else None
    candidates = [
        launched if launched is not None and launched.name in ("kimi-mcp", "kimi-mcp.exe") else None,
        Path(sys.executable).parent / name,
    ]
    for candidate in candidates:
        if candidate is not None and candidate.is_file():
            return [os.path.abspath(candidate)]
    found = shutil.which("kimi-mcp")
    if found:
        return [os.path.abspath(found)]
    return [os.path.abspath(sys.executable), "-m", "kimi_mcp"]


def entry_env(settings: Settings, options: ConfigOptions) -> dict[str, str]:
    """The entry's environment: the token (or its placeholder), then any settings given as flags."""
    if options.with_token:
        if settings.api_token is None:
            raise ConfigError(f"--with-token: no token is set; set {TOKEN_ENV} or pass --api-token")
        token = settings.api_token.reveal()
    else:
        token = f"${{input:{VSCODE_INPUT_ID}}}" if options.host == "vscode" else PLACEHOLDER
    env = {TOKEN_ENV: token}
    for option in OPTIONS:
        if option.field in options.flags and option.field != "api_token" and option.field not in HTTP_ONLY:
            env[option.env] = options.flags[option.field]
    return env


def _entry(host: str, command: list[str], env: dict[str, str]) -> dict[str, Any]:
    entry: dict[str, Any] = {"type": "stdio"} if host == "vscode" else {}
    entry.update({"command": command[0], "args": command[1:], "env": env})
    return entry


def snippet(host: str, name: str, command: list[str], env: dict[str, str]) -> dict[str, Any]:
    """The JSON a host's config file needs for this server (Claude Desktop, Cursor, VS Code)."""
    if host == "vscode":
        inputs = [dict(VSCODE_INPUT)] if VSCODE_INPUT_ID in env.get(TOKEN_ENV, "") else []
        return {"inputs": inputs, "servers": {name: _entry(host, command, env)}}
    return {"mcpServers": {name: _entry(host, command, env)}}


def _quote(arg: str) -> str:
    if sys.platform != "win32":
        return shlex.quote(arg)
    return f'"{arg}"' if not arg or any(ch in arg for ch in ' \t<>&|^()"') else arg


def claude_code_command(name: str, command: list[str], env: dict[str, str]) -> str:
    """`claude mcp add` for this server at user scope. The name goes before `--env`: that option
    takes several values and would swallow a name placed after it."""
    parts = ["claude", "mcp", "add", "--scope", "user", name]
    for key, value in env.items():
        parts += ["--env", f"{key}={value}"]
    parts += ["--", *command]
    return " ".join(_quote(part) for part in parts)


def default_config_path(host: str, env: Mapping[str, str] | None = None, platform: str | None = None) -> Path:
    """The host's per-user config file on this platform."""
    env = os.environ if env is None else env
    platform = sys.platform if platform is None else platform
    home_var = "USERPROFILE" if platform == "win32" else "HOME"
    home = Path(env[home_var]) if env.get(home_var) else Path.home()
    if host == "cursor":
        return home / ".cursor" / "mcp.json"
    if platform == "darwin":
        base = home / "Library" / "Application Support"
    elif platform == "win32":
        base = Path(env["APPDATA"]) if env.get("APPDATA") else home / "AppData" / "Roaming"
    else:
        xdg = env.get("XDG_CONFIG_HOME", "")
        base = Path(xdg) if xdg and Path(xdg).is_absolute() else home / ".config"
    if host == "claude-desktop":
        return base / "Claude" / "claude_desktop_config.json"
    if host == "vscode":
        return base / "Code" / "User" / "mcp.json"
    raise ConfigError(f"{HOST_NAMES.get(host, host)} has no config file kimi-mcp writes")


def merge_entry(document: dict[str, Any], host: str, name: str, fragment: dict[str, Any]) -> Merged:
    """The document with the server entry (and VS Code's input) set; everything else kept."""
    merged = dict(document)
    key = "servers" if host == "vscode" else "mcpServers"
    servers = merged.get(key, {})
    if not isinstance(servers, dict):
        raise ConfigError(f"the file's {key!r} is not a JSON object; fix it by hand first")
    replaced = name in servers
    entry = fragment[key][name]
    kept = _kept_token(servers.get(name), entry)
    if kept is not None:  # never replace a real token with the placeholder
        entry = {**entry, "env": {**entry.get("env", {}), TOKEN_ENV: kept}}
    merged[key] = {**servers, name: entry}
    new_inputs = fragment.get("inputs") or []
    if new_inputs:
        inputs = merged.get("inputs", [])
        if not isinstance(inputs, list):
            raise ConfigError("the file's 'inputs' is not a JSON array; fix it by hand first")
        ids = {i.get("id") for i in new_inputs}
        merged["inputs"] = [i for i in inputs if not (isinstance(i, dict) and i.get("id") in ids)] + new_inputs
    return Merged(merged, replaced, kept_token=kept is not None)


def _kept_token(old: Any, new: dict[str, Any]) -> str | None:
    """The real token of the entry being replaced, when the new entry only has the placeholder."""
    if new.get("env", {}).get(TOKEN_ENV) != PLACEHOLDER or not isinstance(old, dict):
        return None
    env = old.get("env")
    token = env.get(TOKEN_ENV) if isinstance(env, dict) else None
    if isinstance(token, str) and token.strip() and token.strip() != PLACEHOLDER:
        return token
    return None


def _read_document(path: Path) -> dict[str, Any] | None:
    """The file's JSON object, None when there is no file (or it is empty); ConfigError otherwise."""
    if not path.exists():
        return None
    if not path.is_file():
        raise ConfigError(f"{path} is not a file")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from None
    if not text.strip():
        return None
    try:
        document = json.loads(text)
    except ValueError as exc:
        where = f" (line {exc.lineno}, column {exc.colno})" if isinstance(exc, json.JSONDecodeError) else ""
        raise ConfigError(
            f"{path} is not valid JSON{where}; nothing was changed. Fix the file (JSON allows no comments "
            "or trailing commas) or add the entry by hand"
        ) from None
    if not isinstance(document, dict):
        raise ConfigError(f"{path} does not hold a JSON object; nothing was changed")
    return document


def _backup(path: Path) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    backup = path.with_name(f"{path.name}.{stamp}.bak")
    n = 1
    while backup.exists():
        backup = path.with_name(f"{path.name}.{stamp}-{n}.bak")
        n += 1
    shutil.copy2(path, backup)
    return backup


def _write_atomically(path: Path, text: str) -> None:
    """A temp file in the same directory, synced, then renamed over the target (keeping its mode)."""
    mode = stat.S_IMODE(path.stat().st_mode) if path.exists() else None
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_config(path: Path, host: str, name: str, fragment: dict[str, Any]) -> WriteOutcome:
    """Merge the entry into the file at `path` (through a symlink to its target)."""
    if path.is_symlink():
        path = path.resolve()
    document = _read_document(path)
    merged = merge_entry(document or {}, host, name, fragment)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        backup = _backup(path) if path.exists() else None
        _write_atomically(path, json.dumps(merged.document, indent=2, ensure_ascii=False) + "\n")
    except OSError as exc:
        raise ConfigError(f"cannot write {path}: {exc}") from None
    return WriteOutcome(path, backup, merged.replaced, kept_token=merged.kept_token)


def run_config(settings: Settings, options: ConfigOptions, out: TextIO | None = None,
               err: TextIO | None = None) -> int:
    """Print the host's entry (stdout: JSON or the command only), or write it with --write."""
    out = out if out is not None else sys.stdout
    note = Painter(err if err is not None else sys.stderr)
    host_name = HOST_NAMES[options.host]
    try:
        ignored = sorted(f for f in options.flags if f in HTTP_ONLY)
        if ignored:
            flags = ", ".join(o.flag for o in OPTIONS if o.field in ignored)
            note.write(note.style(f"note: {flags} left out: {host_name} starts kimi-mcp over stdio\n", "dim"))
        if options.uvx:
            note.write(note.style("note: `uvx kimi-mcp` runs the kimi-mcp package from PyPI, which is not "
                                  "published yet: until the first release, leave out --uvx\n", "yellow"))
        command = server_command(options.uvx)
        env = entry_env(settings, options)
        if options.host == "claude-code":
            if options.write:
                raise ConfigError("--write does not apply to claude-code: Claude Code keeps its own "
                                  "configuration; run the command that `kimi-mcp config claude-code` prints")
            out.write(claude_code_command(options.name, command, env) + "\n")
            if not options.with_token:
                note.write(note.style(f"Replace {PLACEHOLDER} with your Ace Data Cloud token before running it "
                                      "(or use --with-token).\n", "dim"))
            return 0
        fragment = snippet(options.host, options.name, command, env)
        path = Path(options.config_path).expanduser() if options.config_path else default_config_path(options.host)
        if not options.write:
            out.write(json.dumps(fragment, indent=2, ensure_ascii=False) + "\n")
            note.write(note.style(f"Merge this into {path}, or run again with --write to do it for you.\n", "dim"))
            return 0
        outcome = write_config(path, options.host, options.name, fragment)
    except ConfigError as exc:
        note.write(f"kimi-mcp: {exc}\n")
        return 1
    done = Painter(out)
    verb = "Replaced" if outcome.replaced else "Added"
    done.write(f"{done.style('ok', 'green')} {verb} the {options.name!r} server in {outcome.path}\n")
    if outcome.backup is not None:
        done.write(f"   Backup of the previous file: {outcome.backup}\n")
    if outcome.kept_token:
        done.write("   Kept the token already in that entry (pass --with-token to replace it).\n")
    elif env[TOKEN_ENV] == PLACEHOLDER:
        done.write(f"   Replace {PLACEHOLDER} in that file with your Ace Data Cloud token "
                   "(or run again with --with-token).\n")
    done.write(f"   Restart {host_name} to load it.\n")
    return 0
