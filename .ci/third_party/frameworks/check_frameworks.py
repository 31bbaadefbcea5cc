"""Drive kimi-mcp over stdio with two agent frameworks' own MCP clients, with no LLM.

Run with the python of .ci/.frameworks-venv (see ../frameworks.sh, which installs the pinned
frameworks from requirements.txt and runs this). For each framework it starts
`$KIMI_MCP_PY -m kimi_mcp` through that framework's MCP client class, lists the tools the way the
framework presents them to a model, then lets a scripted stand-in model call `kimi_chat` and
`kimi_json` through the framework's normal agent loop and checks what the model is handed back:

  pydantic-ai    `pydantic_ai.mcp.MCPToolset` over fastmcp's `StdioTransport` (2.x removed
                 `MCPServerStdio`), an `Agent` driven by `pydantic_ai.models.function.FunctionModel`
  openai-agents  `agents.mcp.MCPServerStdio` (client_session_timeout_seconds=30, not the default 5),
                 tools converted with `MCPUtil.to_function_tool(..., convert_schemas_to_strict=True)`
                 and an `Agent` run by `Runner` with a scripted `agents.models.interface.Model`

The upstream is tests/support/fake_ace.py, started here as a loopback subprocess
(`$KIMI_MCP_PY -m tests.support.fake_ace --port 0` in the repository root) and scripted over its
/_fake/ control API, so the answers are known. The server gets KIMI_STORE=memory,
KIMI_SOFT_DEADLINE=0 and a temporary HOME / XDG_DATA_HOME.

Output: one line per check, "ok <framework> <check>" or "FAIL <framework> <check>: <why>", then a
summary; exit status 1 when any check failed (2 on a set-up problem).

Environment:
  KIMI_MCP_PY               python that has kimi_mcp (default: <repo>/.venv/bin/python)
  FRAMEWORKS_STEP_TIMEOUT   seconds per step (default 60)
  FRAMEWORKS_RUN_TIMEOUT    seconds for all the checks (default 150)
  FRAMEWORKS_ONLY           "pydantic-ai" or "openai-agents" to run one framework only
  FRAMEWORKS_LOG_DIR        directory for the server / fake logs (default: a temp dir, removed
                            unless something failed)
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import urllib.request
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[3]
KIMI_MCP_PY = os.environ.get("KIMI_MCP_PY") or str(ROOT / ".venv" / "bin" / "python")
STEP_TIMEOUT = float(os.environ.get("FRAMEWORKS_STEP_TIMEOUT", "60"))
TOTAL_TIMEOUT = float(os.environ.get("FRAMEWORKS_RUN_TIMEOUT", "150"))
ONLY = os.environ.get("FRAMEWORKS_ONLY", "")

# Deliberately fake; handed to both the fake upstream (--token) and the server.
TOKEN = "test-token-s3cr3t-0123456789"
CHAT_PROMPT = "Say the check phrase."
CHAT_ANSWER = "FAKE-KIMI-ANSWER 7f3c: the frameworks check phrase."
JSON_PROMPT = "Give n."
JSON_SCHEMA_STR = '{"type":"object","properties":{"n":{"type":"integer"}},"required":["n"]}'
JSON_ANSWER = '{"n": 42}'
STRICT_TOOLS = ("kimi_chat", "kimi_json")
ALL_TOOLS = ("kimi_chat", "kimi_json", "kimi_list_conversations", "kimi_read_conversation",
             "kimi_delete_conversation")
MAX_DESCRIPTION = 1024

RESULTS: list[tuple[bool, str]] = []


def ok(name: str, detail: str = "") -> None:
    RESULTS.append((True, name))
    print(f"ok {name}" + (f" ({detail})" if detail else ""), flush=True)


def fail(name: str, why: str) -> None:
    RESULTS.append((False, name))
    print(f"FAIL {name}: {why}", flush=True)


class CheckFailed(Exception):
    pass


def short(value: Any, n: int = 400) -> str:
    s = value if isinstance(value, str) else repr(value)
    return s if len(s) <= n else s[:n] + f"... ({len(s)} chars)"


# --------------------------------------------------------------------------- the fake upstream


class Fake:
    """tests/support/fake_ace.py as a subprocess; its first stdout line is the base URL."""

    def __init__(self, log_dir: Path) -> None:
        self.log = open(log_dir / "fake_ace.err", "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [KIMI_MCP_PY, "-m", "tests.support.fake_ace", "--host", "127.0.0.1", "--port", "0",
             "--token", TOKEN],
            cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=self.log, text=True,
        )
        line: list[str] = []
        reader = threading.Thread(target=lambda: line.append(self.proc.stdout.readline()), daemon=True)  # type: ignore[union-attr]
        reader.start()
        reader.join(20)
        self.url = (line[0] if line else "").strip()
        if not self.url.startswith("http://127.0.0.1:"):
            self.stop()
            err = (log_dir / "fake_ace.err").read_text(errors="replace")[-600:]
            raise RuntimeError(f"`{KIMI_MCP_PY} -m tests.support.fake_ace --port 0` (cwd {ROOT}) printed no "
                               f"loopback URL within 20 s (got {line[:1]!r}); its stderr: {err}")

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method,
                                     headers={"content-type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as resp:
            return json.loads(resp.read())

    def reset(self) -> None:
        self._call("POST", "/_fake/reset", {})

    def script(self, *contents: str) -> None:
        """Queue successful answers, in order, for the next chat requests."""
        self._call("POST", "/_fake/script", {"responses": [{"kind": "reply", "content": c} for c in contents]})

    def requests(self) -> list[dict[str, Any]]:
        return self._call("GET", "/_fake/requests")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.log.close()


# --------------------------------------------------------------------------- shared checks


def server_env(home: Path, base_url: str) -> dict[str, str]:
    """The server's whole environment (both clients pass exactly this to the child)."""
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "LANG": os.environ.get("LANG", "C.UTF-8"),
        "HOME": str(home),
        "XDG_DATA_HOME": str(home / "data"),
        "XDG_CONFIG_HOME": str(home / "config"),
        "XDG_CACHE_HOME": str(home / "cache"),
        "ACEDATACLOUD_API_BASE_URL": base_url,
        "ACEDATACLOUD_API_TOKEN": TOKEN,
        "KIMI_STORE": "memory",
        "KIMI_SOFT_DEADLINE": "0",
    }


def walk(x: Any) -> Iterator[Any]:
    yield x
    if isinstance(x, dict):
        for v in x.values():
            yield from walk(v)
    elif isinstance(x, list):
        for v in x:
            yield from walk(v)


def parsed(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return None


def check_chat_seen(fw: str, seen: str) -> None:
    """`seen` is exactly the text the framework hands the model as kimi_chat's result."""
    name = f"{fw} call kimi_chat"
    if CHAT_ANSWER not in seen:
        return fail(name, f"the fake's answer {CHAT_ANSWER!r} is not in what the model gets: {short(seen)}")
    line = next((ln for ln in seen.splitlines() if ln.startswith("[conversation_id: conv_") and ln.endswith("]")), None)
    if line is not None:
        return ok(name, f"the model gets the answer and the line {line}")
    # Not the text block: the framework handed the model the structuredContent instead. Say so.
    doc = parsed(seen)
    ids = [d.get("conversation_id") for d in walk(doc) if isinstance(d, dict) and "conversation_id" in d]
    if ids and isinstance(ids[0], str) and ids[0].startswith("conv_"):
        return ok(name, f"the model gets structuredContent JSON, not the text block: text = the answer, "
                        f"conversation_id = {ids[0]}; the '[conversation_id: ...]' line is not shown")
    fail(name, f"no '[conversation_id: conv_...]' line and no conversation_id conv_... in what the model gets: "
               f"{short(seen)}")


def check_json_seen(fw: str, seen: str) -> None:
    name = f"{fw} call kimi_json (schema as a JSON string)"
    doc = parsed(seen)
    hits = [d for d in walk(doc) if isinstance(d, dict) and d.get("n") == 42]
    if hits:
        return ok(name, f"the model gets {short(seen, 160)}")
    fail(name, f"no {{\"n\": 42}} in what the model gets: {short(seen)}")


def check_upstream(fw: str, fake: Fake) -> None:
    name = f"{fw} upstream saw the two scripted requests"
    reqs = fake.requests()
    chats = [r for r in reqs if r.get("path") == "/kimi/chat/completions"]
    if len(chats) == 2:
        return ok(name)
    fail(name, f"want 2 chat requests at the fake, got {len(chats)}: {short([r.get('path') for r in reqs])}")


def check_descriptions(fw: str, described: dict[str, str | None]) -> None:
    name = f"{fw} tool descriptions present and <= {MAX_DESCRIPTION} chars"
    bad = {n: (len(d) if d else 0) for n, d in described.items() if not d or len(d) > MAX_DESCRIPTION}
    if bad:
        return fail(name, f"missing or too long (chars): {bad}")
    ok(name, "longest " + str(max(len(d or "") for d in described.values())))


def check_listed(fw: str, names: list[str]) -> bool:
    missing = [n for n in ALL_TOOLS if n not in names]
    if missing:
        fail(f"{fw} list_tools", f"missing {missing}; listed {names}")
        return False
    ok(f"{fw} list_tools", f"{len(names)} tools: {', '.join(names)}")
    return True


async def step(fw: str, what: str, coro: Awaitable[Any], seconds: float = STEP_TIMEOUT) -> Any:
    # asyncio.timeout, not wait_for: the clients enter anyio task groups that must be left in the
    # task that entered them, and wait_for would run the step in a task of its own.
    try:
        async with asyncio.timeout(seconds):
            return await coro
    except TimeoutError as err:
        raise CheckFailed(f"{what} did not finish within {seconds:g} s") from err


# --------------------------------------------------------------------------- pydantic-ai


async def check_pydantic_ai(fake: Fake, home: Path, log_dir: Path) -> None:
    fw = "pydantic-ai"
    from fastmcp.client.transports import StdioTransport
    from pydantic_ai import Agent, RunContext
    from pydantic_ai.mcp import MCPToolset
    from pydantic_ai.messages import (
        ModelMessage,
        ModelRequest,
        ModelResponse,
        RetryPromptPart,
        TextPart,
        ToolCallPart,
        ToolReturnPart,
    )
    from pydantic_ai.models.function import AgentInfo, FunctionModel
    from pydantic_ai.models.test import TestModel
    from pydantic_ai.usage import RunUsage

    fake.reset()
    fake.script(CHAT_ANSWER, JSON_ANSWER)

    transport = StdioTransport(
        command=KIMI_MCP_PY, args=["-m", "kimi_mcp"], env=server_env(home, fake.url), cwd=str(ROOT),
        keep_alive=False, log_file=log_dir / "pydantic-ai-server.log",
    )
    toolset = MCPToolset(transport, id="kimi", init_timeout=30, read_timeout=STEP_TIMEOUT)

    seen: dict[str, str] = {}          # tool name -> what the model was handed
    offered: list[list[str]] = []      # tool names offered to the model, per request

    def model(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        offered.append([t.name for t in info.function_tools])
        last = messages[-1]
        if isinstance(last, ModelRequest):
            for part in last.parts:
                if isinstance(part, ToolReturnPart):
                    seen[part.tool_name] = part.model_response_str()
                elif isinstance(part, RetryPromptPart) and part.tool_name:
                    # A tool error: pydantic-ai hands the model a retry prompt. Stop; it is a failure.
                    seen[part.tool_name] = "RETRY PROMPT: " + part.model_response()
        if any(v.startswith("RETRY PROMPT: ") for v in seen.values()):
            return ModelResponse(parts=[TextPart(json.dumps(seen))])
        if "kimi_chat" not in seen:
            return ModelResponse(parts=[ToolCallPart("kimi_chat", {"prompt": CHAT_PROMPT}, tool_call_id="c1")])
        if "kimi_json" not in seen:
            return ModelResponse(parts=[ToolCallPart(
                "kimi_json", {"prompt": JSON_PROMPT, "schema": JSON_SCHEMA_STR}, tool_call_id="c2")])
        # The final text is the tool outputs exactly as the model saw them.
        return ModelResponse(parts=[TextPart(json.dumps(seen))])

    agent = Agent(FunctionModel(model), toolsets=[toolset])

    await step(fw, "starting the server (MCPToolset.__aenter__)", toolset.__aenter__())
    try:
        ctx = RunContext(deps=None, model=TestModel(), usage=RunUsage())
        tools = await step(fw, "get_tools", toolset.get_tools(ctx))
        defs = {name: t.tool_def for name, t in tools.items()}
        if check_listed(fw, list(defs)):
            check_descriptions(fw, {n: d.description for n, d in defs.items()})
            props = defs["kimi_json"].parameters_json_schema.get("properties", {})
            if "schema" not in props:
                fail(f"{fw} kimi_json has a schema argument", f"its properties: {list(props)}")

        result = await step(fw, "Agent.run (FunctionModel calling kimi_chat, then kimi_json)",
                            agent.run("Use the kimi tools."))
        final = parsed(result.output)
        if not isinstance(final, dict):
            raise CheckFailed(f"the run's output is not the tool outputs: {short(result.output)}")
        if offered and not set(STRICT_TOOLS) <= set(offered[0]):
            fail(f"{fw} tools offered to the model", f"{offered[0]}")
        for tool, check in (("kimi_chat", check_chat_seen), ("kimi_json", check_json_seen)):
            got = final.get(tool)
            if got is None:
                fail(f"{fw} call {tool}", "the model was never handed a result")
            elif got.startswith("RETRY PROMPT: "):
                fail(f"{fw} call {tool}", f"the tool failed; pydantic-ai handed the model: {short(got)}")
            else:
                check(fw, got)
        check_upstream(fw, fake)
    finally:
        await step(fw, "stopping the server (MCPToolset.__aexit__)", toolset.__aexit__(None, None, None), 15)


# --------------------------------------------------------------------------- openai-agents


async def check_openai_agents(fake: Fake, home: Path, log_dir: Path) -> None:
    fw = "openai-agents"
    from agents import Agent, RunConfig, Runner, set_tracing_disabled
    from agents.items import ModelResponse
    from agents.mcp import MCPServerStdio
    from agents.mcp.util import MCPUtil
    from agents.models.interface import Model
    from agents.tool import FunctionTool
    from agents.usage import Usage
    from openai.types.responses import ResponseFunctionToolCall, ResponseOutputMessage, ResponseOutputText

    set_tracing_disabled(True)  # no exporter: tracing would try to reach OpenAI
    fake.reset()
    fake.script(CHAT_ANSWER, JSON_ANSWER)

    server = MCPServerStdio(
        params={"command": KIMI_MCP_PY, "args": ["-m", "kimi_mcp"], "env": server_env(home, fake.url),
                "cwd": str(ROOT)},
        name="kimi", client_session_timeout_seconds=30, cache_tools_list=True,
    )

    seen: dict[str, str] = {}
    offered: list[list[FunctionTool]] = []
    call_names = {"call_chat": "kimi_chat", "call_json": "kimi_json"}

    def output_text(out: Any) -> str:
        # A function_call_output's `output` is a string or a list of content items.
        if isinstance(out, str):
            return out
        if isinstance(out, dict) and out.get("type") in ("text", "input_text"):
            return str(out.get("text"))
        if isinstance(out, list):
            return "\n".join(output_text(o) for o in out)
        return json.dumps(out, default=str)

    sent: dict[str, dict[str, Any]] = {}

    def model_args(tool: FunctionTool, given: dict[str, Any]) -> dict[str, Any]:
        """The arguments a model sends: with a strict schema every property is required, so a model
        sends them all, null (or the default) for the ones it does not mean to set."""
        args = dict(given)
        if tool.strict_json_schema:
            for name, prop in tool.params_json_schema.get("properties", {}).items():
                if name in args:
                    continue
                types = [b.get("type") for b in prop.get("anyOf", [])] + [prop.get("type")]
                if "default" in prop:
                    args[name] = prop["default"]
                elif "null" in types or any(isinstance(t, list) and "null" in t for t in types):
                    args[name] = None
                else:
                    raise CheckFailed(f"{tool.name}'s strict schema requires {name!r}, which admits no null "
                                      f"and has no default: {short(prop, 200)}")
        sent[tool.name] = args
        return args

    class ScriptedModel(Model):
        async def get_response(self, system_instructions: Any, input: Any, model_settings: Any, tools: Any,
                               output_schema: Any, handoffs: Any, tracing: Any, **_: Any) -> ModelResponse:
            offered.append([t for t in tools if isinstance(t, FunctionTool)])
            for item in input if isinstance(input, list) else []:
                item = item if isinstance(item, dict) else item.model_dump()
                if item.get("type") == "function_call_output" and item.get("call_id") in call_names:
                    seen[call_names[item["call_id"]]] = output_text(item.get("output"))
            by_name = {t.name: t for t in tools if isinstance(t, FunctionTool)}
            if "kimi_chat" not in seen:
                args = model_args(by_name["kimi_chat"], {"prompt": CHAT_PROMPT})
                out: Any = ResponseFunctionToolCall(type="function_call", id="fc_1", call_id="call_chat",
                                                    name="kimi_chat", arguments=json.dumps(args), status="completed")
            elif "kimi_json" not in seen:
                args = model_args(by_name["kimi_json"], {"prompt": JSON_PROMPT, "schema": JSON_SCHEMA_STR})
                out = ResponseFunctionToolCall(type="function_call", id="fc_2", call_id="call_json",
                                               name="kimi_json", arguments=json.dumps(args), status="completed")
            else:
                out = ResponseOutputMessage(
                    type="message", id="msg_1", role="assistant", status="completed",
                    content=[ResponseOutputText(type="output_text", text=json.dumps(seen), annotations=[])])
            return ModelResponse(output=[out], usage=Usage(), response_id=None)

        def stream_response(self, *args: Any, **kwargs: Any) -> Any:
            raise NotImplementedError("this check does not stream")

    await step(fw, "connecting (MCPServerStdio.connect)", server.connect())
    try:
        tools = await step(fw, "list_tools", server.list_tools())
        names = [t.name for t in tools]
        if check_listed(fw, names):
            converted = {t.name: MCPUtil.to_function_tool(t, server, convert_schemas_to_strict=True) for t in tools}
            # The description the model gets is the converted tool's.
            check_descriptions(fw, {n: ft.description for n, ft in converted.items()})
            for n in STRICT_TOOLS:
                ft = converted[n]
                if ft.strict_json_schema:
                    ok(f"{fw} {n} converts to a strict schema",
                       f"strict_json_schema=True, {len(ft.params_json_schema.get('properties', {}))} params")
                else:
                    fail(f"{fw} {n} converts to a strict schema",
                         "MCPUtil.to_function_tool(convert_schemas_to_strict=True) fell back to non-strict "
                         "(agents.strict_schema.ensure_strict_json_schema rejected the inputSchema: "
                         + strict_error(t for t in tools if t.name == n) + ")")
            others = [n for n, ft in converted.items() if n not in STRICT_TOOLS and not ft.strict_json_schema]
            if others:
                print(f"note {fw}: not strict after conversion (not required): {others}", flush=True)

        agent = Agent(name="kimi-check", instructions="Use the kimi tools.", model=ScriptedModel(),
                      mcp_servers=[server], mcp_config={"convert_schemas_to_strict": True})
        result = await step(fw, "Runner.run (scripted Model calling kimi_chat, then kimi_json)",
                            Runner.run(agent, "Use the kimi tools.", max_turns=5,
                                       run_config=RunConfig(tracing_disabled=True)))
        if offered:
            strict = {t.name: t.strict_json_schema for t in offered[0] if t.name in STRICT_TOOLS}
            if strict != dict.fromkeys(STRICT_TOOLS, True):
                fail(f"{fw} Agent offers kimi_chat/kimi_json to the model with strict schemas", f"{strict}")
            else:
                ok(f"{fw} Agent offers kimi_chat/kimi_json to the model with strict schemas")
        final = parsed(str(result.final_output))
        if not isinstance(final, dict):
            raise CheckFailed(f"the run's output is not the tool outputs: {short(result.final_output)}")
        print(f"# {fw}: the scripted model sent " + "; ".join(
            f"{n} {len(a)} arguments ({sum(v is None for v in a.values())} null)" for n, a in sent.items()), flush=True)
        for tool, check in (("kimi_chat", check_chat_seen), ("kimi_json", check_json_seen)):
            got = final.get(tool)
            if got is None:
                fail(f"{fw} call {tool}", "the model was never handed a result")
            elif got.startswith("An error occurred while running the tool") or got.startswith("Invalid arguments"):
                fail(f"{fw} call {tool}", f"the tool failed; openai-agents handed the model: {short(got)}")
            else:
                check(fw, got)
        check_upstream(fw, fake)
    finally:
        await step(fw, "stopping the server (MCPServerStdio.cleanup)", server.cleanup(), 15)


def strict_error(tools: Any) -> str:
    """Why the strict conversion failed: the same call MCPUtil.to_function_tool makes, error kept."""
    from agents.mcp.util import tool_input_schema  # type: ignore[attr-defined]
    from agents.strict_schema import ensure_strict_json_schema
    schema = json.loads(json.dumps(tool_input_schema(next(iter(tools)))))
    empty = schema == {}
    schema.setdefault("properties", {})
    try:
        try:
            ensure_strict_json_schema(schema, _reject_open_objects=not empty)
        except TypeError:
            ensure_strict_json_schema(schema)
    except Exception as err:
        return f"{type(err).__name__}: {err}"
    return "no error when converting by hand"


# --------------------------------------------------------------------------- main


FRAMEWORKS: dict[str, Callable[[Fake, Path, Path], Awaitable[None]]] = {
    "pydantic-ai": check_pydantic_ai,
    "openai-agents": check_openai_agents,
}


def versions() -> str:
    from importlib.metadata import version
    return ", ".join(f"{p} {version(p)}" for p in ("pydantic-ai-slim", "openai-agents", "fastmcp-slim", "mcp"))


async def run_all(fake: Fake, home: Path, log_dir: Path) -> None:
    async with asyncio.timeout(TOTAL_TIMEOUT):
        await _run_all(fake, home, log_dir)


async def _run_all(fake: Fake, home: Path, log_dir: Path) -> None:
    for fw, check in FRAMEWORKS.items():
        if ONLY and fw != ONLY:
            continue
        t0 = time.monotonic()
        try:
            await check(fake, home, log_dir)
        except CheckFailed as err:
            fail(f"{fw}", str(err))
        except Exception as err:
            fail(f"{fw}", f"{type(err).__name__}: {short(str(err), 800)}")
            traceback.print_exc(file=sys.stderr)
        print(f"# {fw}: {time.monotonic() - t0:.1f} s", flush=True)


def main() -> int:
    if not Path(KIMI_MCP_PY).exists():
        print(f"FAIL set-up: KIMI_MCP_PY={KIMI_MCP_PY} does not exist", flush=True)
        return 2
    keep = os.environ.get("FRAMEWORKS_LOG_DIR")
    log_dir = Path(keep) if keep else Path(tempfile.mkdtemp(prefix="kimi-mcp-frameworks."))
    log_dir.mkdir(parents=True, exist_ok=True)
    home = Path(tempfile.mkdtemp(prefix="kimi-mcp-frameworks-home."))
    print(f"# {versions()}; server: {KIMI_MCP_PY} -m kimi_mcp; logs in {log_dir}", flush=True)
    t0 = time.monotonic()
    try:
        fake = Fake(log_dir)
    except Exception as err:
        print(f"FAIL set-up: {err}", flush=True)
        return 2
    print(f"# fake Ace API at {fake.url}", flush=True)
    try:
        asyncio.run(run_all(fake, home, log_dir))
    except TimeoutError:
        fail("frameworks", f"the whole check did not finish within {TOTAL_TIMEOUT:g} s")
    finally:
        fake.stop()
        shutil.rmtree(home, ignore_errors=True)
    failed = [n for good, n in RESULTS if not good]
    print(f"frameworks: {len(RESULTS) - len(failed)} passed, {len(failed)} failed ({time.monotonic() - t0:.1f} s)",
          flush=True)
    if not keep:  # else the caller (frameworks.sh) owns the directory
        if failed or not RESULTS:
            print(f"# logs kept in {log_dir}", flush=True)
        else:
            shutil.rmtree(log_dir, ignore_errors=True)
    return 1 if failed or not RESULTS else 0


if __name__ == "__main__":
    sys.exit(main())
