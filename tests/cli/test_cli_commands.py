"""The user-facing commands: `kimi-mcp doctor`, `config HOST`, `chat PROMPT`, and `serve` as the default.

Commands run against the loopback fake with HOME pointed at a temporary directory, so nothing
touches the real user's files. Commands that never import the MCP SDK (config, help, flag errors)
and one end-to-end run of doctor, chat and serve are real subprocesses (`python -m kimi_mcp`);
the rest call `cli.main` in-process (same code, without paying the SDK's import time per test).
"""

from __future__ import annotations

import io
import json
import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from kimi_mcp.cli.config import default_config_path
from kimi_mcp.cli.term import Painter, wants_colour
from tests.cli.helpers import (
    CID,
    ESC,
    EXE,
    ROOT,
    Cli,
    chat_posts,
    check_lines,
    closed_port,
    one_line,
    run_cli,
)
from tests.support.fake_ace import FakeAce, ace_error, reply, stall
from tests.support.models import DEFAULT_ID

# --------------------------------------------------------------------------- doctor


def test_doctor_all_ok(fake: FakeAce, env: dict[str, str]) -> None:
    """Every check passes, the one real call goes through the tools' path to the default model made
    cheap (it always thinks: the lowest effort, a small cap), and the token is never printed."""
    result = run_cli("doctor", env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    checks = check_lines(result.stdout)
    assert [c[1] for c in checks] == ["settings", "token", "store", "base URL", "call"]
    assert all(verdict == "ok" for verdict, _, _ in checks), result.stdout
    assert "All 5 checks passed." in result.stdout
    assert fake.token not in result.stdout + result.stderr
    assert ESC not in result.stdout + result.stderr  # not a terminal: no colour
    posts = chat_posts(fake)
    assert len(posts) == 1
    assert posts[0]["model"] == DEFAULT_ID
    assert "thinking" not in posts[0]  # kimi-k3 always thinks: no switch to send
    assert (posts[0]["reasoning_effort"], posts[0]["max_tokens"]) == ("low", 512)
    assert f"{DEFAULT_ID} answered 'Hello from fake Kimi.'" in checks[-1][2]


def test_doctor_without_token_says_how_to_set_it(cli: Cli, fake: FakeAce, env: dict[str, str]) -> None:
    del env["ACEDATACLOUD_API_TOKEN"]
    result = cli("doctor", env=env)
    assert result.returncode == 1
    checks = {name: (verdict, detail) for verdict, name, detail in check_lines(result.stdout)}
    assert checks["token"][0] == "problem"
    assert "ACEDATACLOUD_API_TOKEN is not set" in checks["token"][1]
    assert "platform.acedata.cloud" in checks["token"][1]
    assert checks["call"][0] == "skipped"
    assert chat_posts(fake) == []


def test_doctor_with_a_refused_token(cli: Cli, fake: FakeAce, env: dict[str, str]) -> None:
    env["ACEDATACLOUD_API_TOKEN"] = "not-the-right-token-123"
    result = cli("doctor", env=env)
    assert result.returncode == 1
    checks = {name: (verdict, detail) for verdict, name, detail in check_lines(result.stdout)}
    assert checks["token"][0] == "ok"
    assert checks["call"][0] == "problem"
    assert "HTTP 401" in checks["call"][1]
    assert "token was refused" in checks["call"][1]
    assert "not-the-right-token-123" not in result.stdout + result.stderr
    assert fake.requests[-1].headers["authorization"] == "Bearer not-the-right-token-123"


def test_doctor_with_an_unreachable_base_url(cli: Cli, fake: FakeAce, env: dict[str, str]) -> None:
    url = f"http://127.0.0.1:{closed_port()}"
    result = cli("doctor", env=env | {"ACEDATACLOUD_API_BASE_URL": url})
    assert result.returncode == 1
    checks = {name: (verdict, detail) for verdict, name, detail in check_lines(result.stdout)}
    assert checks["base URL"][0] == "problem"
    assert f"cannot reach {url}" in checks["base URL"][1]
    assert "check ACEDATACLOUD_API_BASE_URL" in checks["base URL"][1]
    assert checks["call"][0] == "skipped"
    assert fake.requests == []


def test_doctor_when_the_balance_is_used_up(cli: Cli, fake: FakeAce, env: dict[str, str]) -> None:
    fake.script(ace_error(403, "used_up", "Your balance is used up."))
    result = cli("doctor", env=env)
    assert result.returncode == 1
    verdict, _, detail = check_lines(result.stdout)[-1]
    assert verdict == "problem"
    assert "insufficient balance" in detail
    assert "recharge at https://platform.acedata.cloud" in detail
    assert len(chat_posts(fake)) == 1  # no retry of a balance error


def test_doctor_reports_a_bad_setting_as_a_problem_line(cli: Cli, env: dict[str, str]) -> None:
    result = cli("doctor", "--port", "not-a-port", env=env)
    assert result.returncode == 1
    assert check_lines(result.stdout) == [
        ("problem", "settings", "invalid setting --port: 'not-a-port' is not a whole number → fix the flag or "
                                "environment variable it names"),
    ]


def test_doctor_no_call_and_flags_before_the_command(cli: Cli, fake: FakeAce, env: dict[str, str]) -> None:
    """A settings flag given before the subcommand is kept (not reset by the subcommand's parser)."""
    result = cli("--base-url", fake.base_url + "/", "doctor", "--no-call",
                     env=env | {"ACEDATACLOUD_API_BASE_URL": "http://127.0.0.1:1"})
    assert result.returncode == 0, result.stdout
    checks = check_lines(result.stdout)
    assert checks[-1][:2] == ("skipped", "call")
    assert f"base URL {fake.base_url}" in checks[0][2]
    assert chat_posts(fake) == []


@pytest.mark.parametrize(("default", "thinking", "effort", "max_tokens", "shown"), [
    ("kimi-k2-thinking", None, None, 512, "kimi-k2-thinking answered"),  # always thinks, no effort to lower
    ("kimi-k3.1-pro", None, "low", 512, "kimi-k3.1-pro answered"),  # always thinks: the lowest effort
    ("kimi-k2.6", {"type": "disabled"}, None, 16, "kimi-k2.6 (thinking off) answered"),  # switched off
    ("kimi-k2-turbo-preview", None, None, 16, "kimi-k2-turbo-preview answered"),  # never thinks
])
def test_doctor_calls_the_default_model_itself_cheaply(cli: Cli, fake: FakeAce, env: dict[str, str], default: str,
                                                       thinking: object, effort: str | None, max_tokens: int,
                                                       shown: str) -> None:
    """The test call proves the configured model exists, so it is never swapped for a faster one;
    it is made cheap instead: thinking off where it switches, else the lowest effort and room to think."""
    result = cli("doctor", "--default-model", default, env=env)
    assert result.returncode == 0, result.stdout
    posts = chat_posts(fake)
    assert [p["model"] for p in posts] == [default]
    assert (posts[0].get("thinking"), posts[0].get("reasoning_effort"), posts[0]["max_tokens"]) == (
        thinking, effort, max_tokens)
    assert shown in check_lines(result.stdout)[-1][2]


@pytest.mark.skipif(sys.platform == "win32", reason="needs a pseudo-terminal")
def test_doctor_colours_its_verdicts_on_a_terminal(env: dict[str, str]) -> None:
    import pty

    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "kimi_mcp", "doctor", "--no-call"], cwd=ROOT,
                            env=env,
                            stdin=subprocess.DEVNULL, stdout=slave, stderr=subprocess.PIPE)
    os.close(slave)
    chunks: list[bytes] = []
    while True:
        try:
            data = os.read(master, 4096)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    assert proc.wait(timeout=30) == 0
    assert proc.stderr is not None
    proc.stderr.close()
    text = b"".join(chunks).decode()
    assert "settings" in text
    assert f"{ESC}32;1mok" in text  # green, bold


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize(
    ("stream", "env", "expected"),
    [
        (FakeTerminal(), {}, True),
        (FakeTerminal(), {"NO_COLOR": "1"}, False),
        (FakeTerminal(), {"NO_COLOR": ""}, True),  # no-color.org: only a non-empty value counts
        (FakeTerminal(), {"TERM": "dumb"}, False),
        (io.StringIO(), {}, False),
    ],
    ids=["terminal", "no-color", "empty-no-color", "dumb", "pipe"],
)
def test_colour_only_on_a_terminal_without_no_color(stream: io.StringIO, env: dict[str, str], expected: bool) -> None:
    assert wants_colour(stream, env) is expected
    assert Painter(stream, colour=expected).style("x", "dim") == ("\x1b[2mx\x1b[0m" if expected else "x")


@pytest.mark.parametrize("host", ["claude-desktop", "cursor"])
def test_config_prints_the_mcp_servers_entry(host: str, env: dict[str, str], fake: FakeAce) -> None:
    result = run_cli("config", host, env=env)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"mcpServers": {"kimi": {
        "command": EXE, "args": [], "env": {"ACEDATACLOUD_API_TOKEN": "<your-ace-token>"},
    }}}
    assert Path(EXE).is_absolute() and Path(EXE).is_file()
    assert fake.token not in result.stdout + result.stderr


def test_config_vscode_prompts_for_the_token(env: dict[str, str]) -> None:
    result = run_cli("config", "vscode", env=env)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {
        "inputs": [{"type": "promptString", "id": "ace-token",
                    "description": "Ace Data Cloud API token (https://platform.acedata.cloud)", "password": True}],
        "servers": {"kimi": {"type": "stdio", "command": EXE, "args": [],
                             "env": {"ACEDATACLOUD_API_TOKEN": "${input:ace-token}"}}},
    }


def test_config_claude_code_prints_the_command(cli: Cli, env: dict[str, str]) -> None:
    """The server's name comes before --env, which would otherwise swallow it as a second value."""
    result = cli("config", "claude-code", "--name", "moonshot", env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout == (
        f"claude mcp add --scope user moonshot --env 'ACEDATACLOUD_API_TOKEN=<your-ace-token>' -- {EXE}\n"
    )


def test_config_with_token_uvx_and_settings_flags(env: dict[str, str], fake: FakeAce) -> None:
    result = run_cli("config", "vscode", "--with-token", "--uvx", "--default-model", "kimi-k2-turbo-preview",
                     "--port", "9000", env=env)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"inputs": [], "servers": {"kimi": {
        "type": "stdio", "command": "uvx", "args": ["kimi-mcp"],
        "env": {"ACEDATACLOUD_API_TOKEN": fake.token, "KIMI_DEFAULT_MODEL": "kimi-k2-turbo-preview"},
    }}}
    assert "--port left out" in result.stderr
    assert "not published yet" in result.stderr  # --uvx says the package is not on PyPI before release


def test_config_with_token_needs_a_token(cli: Cli, env: dict[str, str]) -> None:
    del env["ACEDATACLOUD_API_TOKEN"]
    result = cli("config", "cursor", "--with-token", env=env)
    assert result.returncode == 1
    assert "no token is set" in one_line(result.stderr)
    assert result.stdout == ""


def test_config_write_merges_keeps_and_backs_up(tmp_path: Path, env: dict[str, str], fake: FakeAce) -> None:
    path = tmp_path / "claude_desktop_config.json"
    original = json.dumps({
        "globalShortcut": "Ctrl+Space",
        "mcpServers": {"other": {"command": "other-server", "args": ["--x"]},
                       "kimi": {"command": "old-kimi", "args": []}},
    }, indent=4)
    path.write_text(original)
    path.chmod(0o640)
    result = run_cli("config", "claude-desktop", "--write", "--with-token", "--config-path", str(path), env=env)
    assert result.returncode == 0, result.stderr
    assert json.loads(path.read_text()) == {
        "globalShortcut": "Ctrl+Space",
        "mcpServers": {"other": {"command": "other-server", "args": ["--x"]},
                       "kimi": {"command": EXE, "args": [], "env": {"ACEDATACLOUD_API_TOKEN": fake.token}}},
    }
    backups = list(tmp_path.glob("claude_desktop_config.json.*.bak"))
    assert len(backups) == 1
    assert backups[0].read_text() == original
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert "Replaced the 'kimi' server" in result.stdout
    assert str(backups[0]) in result.stdout
    assert fake.token not in result.stdout + result.stderr
    assert not list(tmp_path.glob(".*.tmp"))


def test_config_write_vscode_merges_inputs_once(cli: Cli, tmp_path: Path, env: dict[str, str]) -> None:
    path = tmp_path / "mcp.json"
    path.write_text(json.dumps({"servers": {"git": {"type": "stdio", "command": "git-mcp"}},
                                "inputs": [{"type": "promptString", "id": "gh", "password": True}]}))
    for _ in range(2):
        result = cli("config", "vscode", "--write", "--config-path", str(path), env=env)
        assert result.returncode == 0, result.stderr
    document = json.loads(path.read_text())
    assert [i["id"] for i in document["inputs"]] == ["gh", "ace-token"]
    assert set(document["servers"]) == {"git", "kimi"}
    assert document["servers"]["kimi"]["env"] == {"ACEDATACLOUD_API_TOKEN": "${input:ace-token}"}
    assert len(list(tmp_path.glob("mcp.json.*.bak"))) == 2


def test_config_write_creates_a_new_file_without_backup(cli: Cli, tmp_path: Path, env: dict[str, str]) -> None:
    path = tmp_path / "new" / "dir" / "mcp.json"
    result = cli("config", "cursor", "--write", "--config-path", str(path), env=env)
    assert result.returncode == 0, result.stderr
    assert json.loads(path.read_text())["mcpServers"]["kimi"]["env"] == {"ACEDATACLOUD_API_TOKEN": "<your-ace-token>"}
    assert "Added the 'kimi' server" in result.stdout
    assert "Replace <your-ace-token>" in result.stdout
    assert list(path.parent.iterdir()) == [path]


def test_config_write_refuses_a_file_that_is_not_json(tmp_path: Path, env: dict[str, str]) -> None:
    path = tmp_path / "cfg" / "mcp.json"
    path.parent.mkdir()
    broken = '{\n  // my servers\n  "mcpServers": {}\n}\n'
    path.write_text(broken)
    result = run_cli("config", "cursor", "--write", "--config-path", str(path), env=env)
    assert result.returncode == 1
    line = one_line(result.stderr)
    assert "is not valid JSON (line 2, column 3); nothing was changed" in line
    assert path.read_text() == broken
    assert list(path.parent.iterdir()) == [path]


def test_config_write_follows_a_symlink(cli: Cli, tmp_path: Path, env: dict[str, str]) -> None:
    real = tmp_path / "dotfiles" / "mcp.json"
    real.parent.mkdir()
    real.write_text("{}")
    link = tmp_path / "mcp.json"
    link.symlink_to(real)
    result = cli("config", "cursor", "--write", "--config-path", str(link), env=env)
    assert result.returncode == 0, result.stderr
    assert link.is_symlink()
    assert "kimi" in json.loads(real.read_text())["mcpServers"]


def test_config_write_refused_for_claude_code(cli: Cli, env: dict[str, str]) -> None:
    result = cli("config", "claude-code", "--write", env=env)
    assert result.returncode == 1
    assert "--write does not apply to claude-code" in one_line(result.stderr)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux config locations")
def test_config_write_defaults_to_the_users_file(home: Path, env: dict[str, str]) -> None:
    """Without --config-path the host's usual file under HOME is written (HOME is a temp dir here)."""
    result = run_cli("config", "claude-desktop", "--write", env=env)
    assert result.returncode == 0, result.stderr
    path = home / ".config" / "Claude" / "claude_desktop_config.json"
    assert "kimi" in json.loads(path.read_text())["mcpServers"]


def test_default_config_paths_per_platform(tmp_path: Path) -> None:
    env = {"HOME": "/home/u", "USERPROFILE": r"C:\Users\u", "APPDATA": r"C:\Users\u\AppData\Roaming"}
    assert default_config_path("claude-desktop", env, "linux") == Path(
        "/home/u/.config/Claude/claude_desktop_config.json")
    assert default_config_path("vscode", env | {"XDG_CONFIG_HOME": "/x"}, "linux") == Path("/x/Code/User/mcp.json")
    assert default_config_path("cursor", env, "linux") == Path("/home/u/.cursor/mcp.json")
    assert default_config_path("claude-desktop", env, "darwin") == Path(
        "/home/u/Library/Application Support/Claude/claude_desktop_config.json")
    assert default_config_path("vscode", env, "darwin") == Path(
        "/home/u/Library/Application Support/Code/User/mcp.json")
    assert default_config_path("claude-desktop", env, "win32") == Path(
        r"C:\Users\u\AppData\Roaming") / "Claude" / "claude_desktop_config.json"
    assert default_config_path("cursor", env, "win32") == Path(r"C:\Users\u") / ".cursor" / "mcp.json"


# --------------------------------------------------------------------------- chat


class FirstWriteSpy(io.StringIO):
    """A stdout that notes, at the first piece written, whether the fake had finished its answer."""

    def __init__(self, fake: FakeAce) -> None:
        super().__init__()
        self.fake = fake
        self.upstream_done_at_first_write: bool | None = None

    def write(self, text: str) -> int:
        if self.upstream_done_at_first_write is None and text:
            self.upstream_done_at_first_write = self.fake.requests[-1].finished_at is not None
        return super().write(text)


def test_chat_streams_the_answer_as_it_arrives(
    cli: Cli, fake: FakeAce, env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first piece reaches stdout while the upstream is still in the middle of its stream."""
    fake.script(stall(after_chunks=2, seconds=0.5))
    spy = FirstWriteSpy(fake)
    monkeypatch.setattr(sys, "stdout", spy)
    result = cli("chat", "hi", env=env)
    assert result.returncode == 0, result.stderr
    assert spy.getvalue() == "Hello from fake Kimi.\n"
    assert spy.upstream_done_at_first_write is False
    assert fake.requests[-1].json["stream"] is True


def test_chat_prints_the_answer_and_the_conversation_id(fake: FakeAce, env: dict[str, str]) -> None:
    fake.script(reply("Streamed answer, in many small pieces.", chunk_size=3, chunk_delay=0.005))
    result = run_cli("chat", "Tell me something", "--system", "Be brief.", "--model", "kimi-k2.6",
                     "--thinking", "off", "--max-tokens", "300", env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "Streamed answer, in many small pieces.\n"
    assert CID.search(result.stderr)
    body = chat_posts(fake)[0]
    assert body["model"] == "kimi-k2.6"
    assert body["messages"] == [{"role": "system", "content": "Be brief."},
                                {"role": "user", "content": "Tell me something"}]
    assert body["thinking"] == {"type": "disabled"}
    assert body["max_tokens"] == 300
    assert ESC not in result.stdout + result.stderr
    assert fake.token not in result.stdout + result.stderr


def test_chat_reads_the_prompt_from_stdin(cli: Cli, fake: FakeAce, env: dict[str, str]) -> None:
    result = cli("chat", "-", env=env, stdin="a prompt\nfrom a pipe\n")
    assert result.returncode == 0, result.stderr
    assert chat_posts(fake)[0]["messages"] == [{"role": "user", "content": "a prompt\nfrom a pipe\n"}]


def test_chat_continues_a_conversation(cli: Cli, fake: FakeAce, env: dict[str, str]) -> None:
    fake.script(reply("Paris."), reply("About 2.1 million."))
    first = cli("chat", "Capital of France?", "--model", "kimi-k2-turbo-preview", env=env)
    assert first.returncode == 0, first.stderr
    match = CID.search(first.stderr)
    assert match
    second = cli("chat", "--conversation", match.group(1), "Its population?", env=env)
    assert second.returncode == 0, second.stderr
    assert second.stdout == "About 2.1 million.\n"
    body = chat_posts(fake)[1]
    assert body["model"] == "kimi-k2-turbo-preview"
    assert body["messages"] == [
        {"role": "user", "content": "Capital of France?"},
        {"role": "assistant", "content": "Paris."},
        {"role": "user", "content": "Its population?"},
    ]


def test_chat_json_prints_json(cli: Cli, fake: FakeAce, env: dict[str, str]) -> None:
    fake.script(reply('{"primes": [2, 3, 5]}'))
    schema = '{"type": "object", "required": ["primes"]}'
    result = cli("chat", "Three primes as JSON", "--schema", schema, env=env)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"primes": [2, 3, 5]}
    body = chat_posts(fake)[0]
    assert body["response_format"] == {"type": "json_object"}
    assert '"required": ["primes"]' in body["messages"][0]["content"]


def test_chat_reasoning_goes_to_stderr_only_when_asked(cli: Cli, fake: FakeAce, env: dict[str, str]) -> None:
    fake.script(reply("42", reasoning="Counting carefully.", chunk_size=4),
                reply("42", reasoning="Counting carefully.", chunk_size=4))
    shown = cli("chat", "q", "--reasoning", env=env)
    hidden = cli("chat", "q", env=env)
    assert shown.returncode == hidden.returncode == 0
    assert shown.stdout == hidden.stdout == "42\n"
    assert "Counting carefully." in shown.stderr
    assert "Counting carefully." not in hidden.stderr


@pytest.mark.parametrize(
    ("args", "script", "expected"),
    [
        (("hi",), ace_error(401, "invalid_token", "The token is invalid."),
         "Kimi auth error (HTTP 401, invalid_token)"),
        (("hi", "--model", "kimi-nope"), None, "Invalid arguments: unknown model 'kimi-nope'; valid ids:"),
        # In the command's own words: the flag, not the tool argument.
        (("hi", "--conversation", "conv_missing"), None, "leave --conversation out to start a new conversation"),
        (("hi",), ace_error(403, "used_up", "Balance used up."), "recharge at https://platform.acedata.cloud"),
    ],
    ids=["refused-token", "unknown-model", "unknown-conversation", "used-up"],
)
def test_chat_errors_are_one_line_and_exit_1(
    cli: Cli, fake: FakeAce, env: dict[str, str], args: tuple[str, ...], script: object, expected: str
) -> None:
    if script is not None:
        fake.script(script)  # type: ignore[arg-type]
    result = cli("chat", *args, env=env)
    assert result.returncode == 1
    assert result.stdout == ""
    line = one_line(result.stderr)
    assert line.startswith("kimi-mcp: ")
    assert expected in line
    assert "conversation_id" not in line and "call again" not in line
    assert " — " in line  # the hint follows the message
    assert fake.token not in result.stderr


def test_chat_usage_mistakes_exit_2(cli: Cli, env: dict[str, str]) -> None:
    both = cli("chat", "--json", "--conversation", "conv_x", "hi", env=env)
    assert both.returncode == 2
    assert "leave out --conversation or --json" in one_line(both.stderr)
    empty = cli("chat", "-", env=env, stdin="  \n")
    assert empty.returncode == 2
    assert "empty" in one_line(empty.stderr)


# --------------------------------------------------------------------------- serve and help


@pytest.mark.parametrize("command", ["serve", "chat", "doctor", "config"])
def test_every_command_has_help(command: str, env: dict[str, str]) -> None:
    result = run_cli(command, "--help", env=env)
    assert result.returncode == 0
    assert result.stdout.startswith(f"usage: kimi-mcp {command}")
    assert "--base-url ACEDATACLOUD_API_BASE_URL" in result.stdout  # every command takes the settings flags


def test_top_level_help_lists_the_commands(env: dict[str, str]) -> None:
    result = run_cli("--help", env=env)
    assert result.returncode == 0
    for command in ("serve", "doctor", "config", "chat"):
        assert re.search(rf"^\s+{command}\s", result.stdout, re.MULTILINE), command


@pytest.mark.parametrize("argv", [("--port", "x"), ("--port", "x", "serve"), ("serve", "--port", "x")])
def test_serve_is_the_default_and_keeps_its_flags(argv: tuple[str, ...], env: dict[str, str]) -> None:
    result = run_cli(*argv, env=env)
    assert result.returncode == 2
    assert one_line(result.stderr) == "kimi-mcp: invalid setting --port: 'x' is not a whole number"


def test_serve_without_a_command_serves_stdio(env: dict[str, str]) -> None:
    """`kimi-mcp` alone is still the stdio server a host starts (it answers initialize on stdout)."""
    request = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}}
    result = run_cli(env=env | {"KIMI_STORE": "memory"}, stdin=json.dumps(request) + "\n")
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout.splitlines()[0])
    assert answer["id"] == 1
    assert answer["result"]["serverInfo"]["name"] == "kimi-mcp"
