"""`kimi-mcp doctor`: check a setup one step at a time and say, per line, what to fix.

Checks, in order: the settings, the token (only whether it is set, never its value), the
conversation store, the base URL (any HTTP answer counts as reachable), and one small real call
through the same code as the tools (`open_runtime` -> `ChatService`). What to do about a failed
call is the error's own hint, the same a host's model reads. Then whether traces and metrics are
on and where they go (info lines; a problem only when one is asked for but cannot work). Each
line is printed as soon as its check ends; the exit status is 1 when any check found a problem.
"""

from __future__ import annotations

import platform
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from importlib import metadata
from pathlib import Path
from typing import Literal, TextIO
from urllib.parse import urlsplit

import anyio
import httpx2

from .. import __version__, telemetry
from ..catalogue import Catalogue, catalogue_for
from ..chat import LOCAL
from ..errors import TOKEN_HELP, KimiError, NotFound
from ..prices import prices_for
from ..redaction import redact
from ..settings import TOKEN_PLACEHOLDER, Settings, SettingsError
from .term import Painter

__all__ = ["Check", "Verdict", "call_model", "run_doctor"]

Verdict = Literal["ok", "problem", "skipped"]
CHECK_PROMPT = "Reply with OK."
CHECK_MAX_TOKENS = 16
CHECK_MAX_TOKENS_THINKING = 512
"""A model that always thinks spends its first tokens on reasoning: enough for a few words after."""
CALL_TIMEOUT_S = 120.0
REACH_TIMEOUT_S = 15.0


@dataclass(frozen=True, slots=True)
class Check:
    """One line of the report: the verdict, what was checked, what was found, what to do."""

    verdict: Verdict
    name: str
    detail: str
    advice: str = ""


class Report:
    """Prints each check as it ends (coloured on a terminal), never showing a secret."""

    def __init__(self, out: TextIO, secrets: tuple[str, ...] = ()) -> None:
        self.painter = Painter(out)
        self.secrets = secrets
        self.checks: list[Check] = []

    def line(self, text: str) -> None:
        self.painter.write(redact(text, self.secrets) + "\n")

    def info(self, name: str, detail: str) -> None:
        """A line that is not a check: what is set up, nothing to fix."""
        self.line(f"{self.painter.style('info    ', 'dim')} {name:<9} {detail}")

    def add(self, check: Check) -> Check:
        self.checks.append(check)
        colour = {"ok": "green", "problem": "red", "skipped": "yellow"}[check.verdict]
        text = f"{self.painter.style(f'{check.verdict:<8}', colour, 'bold')} {check.name:<9} {check.detail}"
        if check.advice:
            text += f" {self.painter.style('→ ' + check.advice, 'bold' if check.verdict == 'problem' else 'dim')}"
        self.line(text)
        return check

    @property
    def problems(self) -> int:
        return sum(1 for c in self.checks if c.verdict == "problem")

    def summary(self) -> int:
        if self.problems:
            self.line(self.painter.style(f"{self.problems} problem(s) found: fix the lines marked 'problem' "
                                         "and run kimi-mcp doctor again.", "red"))
            return 1
        self.line(self.painter.style(f"All {len(self.checks)} checks passed.", "green"))
        return 0


def _versions() -> str:
    try:
        sdk = metadata.version("mcp")
    except metadata.PackageNotFoundError:
        sdk = "?"
    return f"kimi-mcp {__version__} doctor (Python {platform.python_version()}, MCP SDK {sdk})"


def check_settings(env: Mapping[str, str], flags: Mapping[str, str | None]) -> tuple[Check, Settings | None]:
    try:
        settings = Settings.load(env, flags)
        catalogue_for(settings)
        prices_for(settings)
    except SettingsError as exc:
        return Check("problem", "settings", str(exc), "fix the flag or environment variable it names"), None
    return Check("ok", "settings", f"read (base URL {settings.base_url}, default model "
                                   f"{settings.default_model})"), settings


def check_token(settings: Settings, env: Mapping[str, str] | None = None) -> Check:
    if settings.api_token is None:
        raw = (env or {}).get("ACEDATACLOUD_API_TOKEN", "").strip()
        what = f"is still the placeholder {TOKEN_PLACEHOLDER}" if raw == TOKEN_PLACEHOLDER else "is not set"
        return Check("problem", "token", f"ACEDATACLOUD_API_TOKEN {what}", TOKEN_HELP)
    return Check("ok", "token", "ACEDATACLOUD_API_TOKEN is set")


def _look(spec: str) -> tuple[Path, bool, bool]:
    path = Path(spec).expanduser()
    return path, path.is_dir(), path.exists()


async def check_store(settings: Settings) -> Check:
    """Whether the conversation store can be used: opened for real (created if missing, migrated,
    read once), so a file that is corrupt, of a newer version or not writable is reported here."""
    from ..store import SQLiteStore, StorageError, default_store_path

    fix = "set KIMI_STORE to a writable file path, or KIMI_STORE=memory to keep nothing on disk"
    if settings.store == "memory":
        return Check("ok", "store", "in memory (conversations end with the process)")
    path, is_dir, existed = _look(settings.store or str(default_store_path()))
    if is_dir:
        return Check("problem", "store", f"{path} is a directory, not a file", fix)
    store = SQLiteStore(path)
    try:
        await store.list(LOCAL, limit=1)
        await store.probe_write()
    except StorageError as exc:
        return Check("problem", "store", str(exc), fix)
    finally:
        await store.close()
    return Check("ok", "store", f"SQLite file {path}{'' if existed else ' (created)'}")


async def check_base_url(settings: Settings) -> Check:
    """Any HTTP answer from the base URL counts: it proves the name resolves and a server listens."""
    url = settings.base_url
    fix = f"check ACEDATACLOUD_API_BASE_URL (now {url}), the network, and any firewall or proxy"
    path = urlsplit(url).path.rstrip("/")
    if path.endswith("/chat/completions") or path.endswith("/kimi"):
        return Check("problem", "base URL", f"{url} looks like an endpoint, not the API's root",
                     "set ACEDATACLOUD_API_BASE_URL to the root, e.g. https://api.acedata.cloud")
    timeout = httpx2.Timeout(REACH_TIMEOUT_S, connect=min(settings.connect_timeout, REACH_TIMEOUT_S))
    try:
        async with (
            httpx2.AsyncClient(timeout=timeout, trust_env=False, follow_redirects=False) as http,
            http.stream("GET", url + "/") as response,
        ):
            status = response.status_code
    except httpx2.TimeoutException as exc:
        return Check("problem", "base URL", f"{url} did not answer in time ({type(exc).__name__})", fix)
    except httpx2.HTTPError as exc:
        reason = str(exc) or type(exc).__name__
        return Check("problem", "base URL", f"cannot reach {url}: {reason}", fix)
    return Check("ok", "base URL", f"{url} is reachable (HTTP {status})")


@dataclass(frozen=True, slots=True)
class CallPlan:
    """The test call: the configured model itself (it must be proven to exist), made cheap."""

    model: str
    thinking: Literal["disabled"] | None = None
    effort: str | None = None
    max_tokens: int = CHECK_MAX_TOKENS


def call_model(settings: Settings, catalogue: Catalogue, wanted: str | None) -> CallPlan:
    """Thinking off where it can be switched, the lowest reasoning effort where there is one."""
    model = catalogue.get(wanted or settings.default_model)
    if model is None:
        return CallPlan(wanted or settings.default_model)  # prepare() reports the unknown id
    if model.thinking_switch and model.thinks(None):
        return CallPlan(model.id, thinking="disabled")
    if model.thinks(None):
        return CallPlan(model.id, effort=model.reasoning_efforts[0] if model.reasoning_efforts else None,
                        max_tokens=CHECK_MAX_TOKENS_THINKING)
    return CallPlan(model.id)


def _describe_error(error: KimiError) -> str:
    head = f"{error.kind.replace('_', ' ')} error"
    if error.status is not None:
        head += f" (HTTP {error.status}{', ' + error.code if error.code else ''})"
    return f"{head}: {error.message}"


async def check_call(settings: Settings, wanted_model: str | None) -> Check:
    """One small real call through the tools' own code path (retries off, short deadline)."""
    from ..chat import ChatArgs
    from ..runtime import open_runtime

    catalogue = catalogue_for(settings)
    plan = call_model(settings, catalogue, wanted_model)
    model = plan.model
    quick = replace(
        settings, store="memory", max_retries=0,
        request_timeout=min(settings.request_timeout, CALL_TIMEOUT_S),
        first_byte_timeout=min(settings.first_byte_timeout, CALL_TIMEOUT_S),
        idle_timeout=min(settings.idle_timeout, CALL_TIMEOUT_S),
    )
    async with open_runtime(quick, catalogue) as tools:
        try:
            request = tools.service.prepare(ChatArgs(
                prompt=CHECK_PROMPT, model=model, max_tokens=plan.max_tokens, thinking=plan.thinking,
                reasoning_effort=plan.effort,
            ))
            started = time.monotonic()
            completed = await tools.service.complete(request)
        except NotFound as error:
            which = "the default model" if model == settings.default_model else "the model"
            return Check("problem", "call", f"{which} {model} is gone: the upstream does not know it "
                                            f"(retired, or never available there)", error.hint)
        except KimiError as error:
            return Check("problem", "call", f"{model}: {_describe_error(error)}", error.hint or "see the message")
    reply = completed.reply
    said = " ".join(reply.text.split())[:40]
    answer = f"answered {said!r}" if said else f"answered (no text; finish_reason {reply.finish_reason})"
    took = time.monotonic() - started
    shown = f"{reply.model or model}{' (thinking off)' if plan.thinking else ''}"
    return Check("ok", "call", f"{shown} {answer} in {took:.1f} s "
                               f"({reply.usage.total_tokens} tokens)")


async def _diagnose(report: Report, settings: Settings, env: Mapping[str, str], model: str | None,
                    call: bool) -> None:
    token = report.add(check_token(settings, env))
    report.add(await check_store(settings))
    reach = report.add(await check_base_url(settings))
    if not call:
        report.add(Check("skipped", "call", "not made (--no-call)"))
    elif token.verdict != "ok" or reach.verdict != "ok":
        report.add(Check("skipped", "call", "not made: it needs a token and a reachable base URL",
                         "fix the problems above first"))
    else:
        report.add(await check_call(settings, model))
    report_observability(report, settings, env)


def report_observability(report: Report, settings: Settings, env: Mapping[str, str]) -> None:
    """Whether spans are exported and where (the standard OTEL_* variables), and whether /metrics is
    served and to whom; a problem only when one is asked for and cannot work here."""
    plan = telemetry.tracing_plan(env)
    if plan is None:
        report.info("traces", "off (set OTEL_EXPORTER_OTLP_ENDPOINT, or OTEL_TRACES_EXPORTER, to export spans; "
                              "needs kimi-mcp[otel])")
    elif (problem := telemetry.tracing_problem(plan)) is not None:
        report.add(Check("problem", "traces", f"asked for ({plan.describe()}), but {problem}",
                         "install what it names, or unset the OTEL_* variables"))
    else:
        report.info("traces", f"on: {plan.describe()}")
    if not settings.metrics:
        report.info("metrics", "off (KIMI_METRICS=true serves /metrics on the HTTP transports; needs "
                               "kimi-mcp[metrics])")
        return
    if settings.transport == "stdio":
        report.add(Check("problem", "metrics", "KIMI_METRICS is on, but the transport is stdio: nothing serves "
                                               "/metrics", "serve --transport streamable-http (or sse), or unset "
                                                           "KIMI_METRICS"))
        return
    try:
        import prometheus_client  # noqa: F401
    except ImportError:
        report.add(Check("problem", "metrics", "KIMI_METRICS is on, but prometheus-client is not installed",
                         "pip install 'kimi-mcp[metrics]'"))
        return
    who = "open to anyone who can reach it (KIMI_METRICS_OPEN)" if settings.metrics_open else (
        "client token and Host checks as on /mcp")
    report.info("metrics", f"on: http://{settings.host}:{settings.port}/metrics, {who}; one endpoint per "
                           "process (scrape every replica)")


def run_doctor(env: Mapping[str, str], flags: Mapping[str, str | None], *, model: str | None = None,
               call: bool = True, out: TextIO | None = None) -> int:
    """Run every check, printing each verdict; 0 when all passed, 1 otherwise."""
    report = Report(out if out is not None else sys.stdout)
    report.line(report.painter.style(_versions(), "bold"))
    first, settings = check_settings(env, flags)
    if settings is not None:
        report.secrets = (*settings.secrets(), *telemetry.env_secrets(env))
    report.add(first)
    if settings is not None:
        anyio.run(_diagnose, report, settings, env, model, call)
    return report.summary()
