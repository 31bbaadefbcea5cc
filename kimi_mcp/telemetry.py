"""Telemetry: traces, metrics and the call context log lines carry, for every layer.

A root module every layer may import: the upstream client opens its span and counts its attempts
here, the chat layer notes the conversation and its background answers, the MCP surface measures
each tool call. It imports only the standard library, anyio, `opentelemetry-api` (a dependency of
the MCP SDK; with no SDK configured every span is a no-op) and the root modules `errors`,
`prices` and `settings`; `prometheus_client` (`kimi-mcp[metrics]`) and the OpenTelemetry SDK (`kimi-mcp[otel]`)
only when the operator turns them on.

What leaves here is never prompt or answer text and never a secret: ids, counts, durations, model
ids and error kinds. Metric labels take bounded values only (tools, models, outcomes, error kinds;
never a conversation id or a principal).
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
import time
import weakref
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import unquote, urlsplit

import anyio
from opentelemetry import trace
from opentelemetry.trace import SpanKind, StatusCode

from . import __version__, prices
from .errors import KimiError
from .settings import SettingsError

__all__ = [
    "PROVIDER",
    "CallInfo",
    "ToolCall",
    "TracingPlan",
    "UpstreamCall",
    "configure_tracing",
    "current_call",
    "enable_metrics",
    "env_secrets",
    "flush_tracing",
    "metrics_enabled",
    "metrics_text",
    "note",
    "queue_wait",
    "tool_call",
    "tracing_plan",
    "upstream_call",
    "watch_background",
    "watch_slots",
]

log = logging.getLogger(__name__)
calls_log = logging.getLogger("kimi_mcp.calls")

PROVIDER = "moonshot"
"""`gen_ai.provider.name`: the conventions list no value for Moonshot's Kimi, so its maker's name;
the gateway (Ace Data Cloud) is in `server.address`."""
SERVICE_NAME = "kimi-mcp"
RETRY_EVENT = "kimi_mcp.upstream.retry"
ERROR_KINDS = frozenset({"cancelled", "internal", "other"})
"""Error kinds a label may take beyond the error classes' own (filled in below)."""


def _kinds(cls: type[KimiError]) -> set[str]:
    return {cls.kind, *(kind for sub in cls.__subclasses__() for kind in _kinds(sub))}


KNOWN_KINDS = ERROR_KINDS | _kinds(KimiError)


def bounded_kind(kind: str) -> str:
    """An error kind fit for a label: one of ours, else "other"."""
    return kind if kind in KNOWN_KINDS else "other"


# --------------------------------------------------------------------------- the call context


@dataclass(slots=True)
class CallInfo:
    """What is known about the tool call the running code serves. Background work the call starts
    shares this object (contexts are copied, the object is not), so what it learns later (the
    model, the conversation) reaches the call's log line, and a span anywhere below can name it."""

    tool: str = ""
    request_id: str = ""
    principal: str = ""
    model: str = ""
    conversation_id: str = ""


_CALL: ContextVar[CallInfo | None] = ContextVar("kimi_mcp_call", default=None)


def current_call() -> CallInfo | None:
    return _CALL.get()


def note(*, model: str | None = None, conversation_id: str | None = None) -> None:
    """Record what the current call is about (outside a tool call, e.g. `kimi-mcp chat`, for the
    rest of this task)."""
    call = _CALL.get()
    if call is None:
        call = CallInfo()
        _CALL.set(call)
    if model:
        call.model = model
    if conversation_id:
        call.conversation_id = conversation_id


def _cancelled(exc: BaseException) -> bool:
    """Whether `exc` is the running async library's cancellation (False outside async code)."""
    try:
        return isinstance(exc, anyio.get_cancelled_exc_class())
    except Exception:
        return False


class ToolCall:
    """One tool call being measured; `end` says how it ended (left unsaid: cancelled or crashed)."""

    __slots__ = ("error_kind", "info", "outcome")

    def __init__(self, info: CallInfo) -> None:
        self.info = info
        self.outcome = ""
        self.error_kind = ""

    def end(self, outcome: str, error_kind: str = "") -> None:
        """`outcome`: ok, partial (handed over before the soft deadline), error or cancelled."""
        self.outcome = outcome
        self.error_kind = bounded_kind(error_kind) if error_kind else ""


@contextmanager
def tool_call(tool: str, *, request_id: str = "", principal: str = "") -> Iterator[ToolCall]:
    """Measure one tool call: in flight while inside, then counted, timed and logged in one line.
    `tool` must already be bounded (a registered tool's name)."""
    call = ToolCall(CallInfo(tool=tool, request_id=request_id, principal=principal))
    token = _CALL.set(call.info)
    started = time.monotonic()
    metrics = _metrics
    if metrics is not None:
        metrics.in_flight.labels(tool).inc()
    try:
        yield call
    except BaseException as exc:
        if not call.outcome:
            cancelled = _cancelled(exc)
            call.end("cancelled" if cancelled else "error", "cancelled" if cancelled else "internal")
        raise
    finally:
        seconds = time.monotonic() - started
        outcome = call.outcome or "error"
        if metrics is not None:
            metrics.in_flight.labels(tool).dec()
            metrics.calls.labels(tool, outcome, call.error_kind or "none").inc()
            metrics.call_seconds.labels(tool, outcome).observe(seconds)
        kind = f" ({call.error_kind})" if call.error_kind else ""
        calls_log.info("%s %s%s in %.3f s", tool, outcome, kind, seconds,
                       extra={"duration_s": round(seconds, 6), "outcome": outcome,
                              "error_kind": call.error_kind or None})
        _CALL.reset(token)


# --------------------------------------------------------------------------- upstream calls

_tracer = trace.get_tracer("kimi_mcp", __version__)


class TokenCounts(prices.TokenCounts, Protocol):
    """The usage figures a span and the token counters read (`upstream.Usage` has this shape): the
    ones a cost is computed from, and the reasoning count."""

    @property
    def reasoning_tokens(self) -> int | None: ...


class UpstreamCall:
    """The span and the measurements of one upstream call, over all its attempts."""

    __slots__ = ("model", "open", "span", "started")

    def __init__(self, span: trace.Span, model: str) -> None:
        self.span = span
        self.model = model
        self.started = time.monotonic()
        self.open = False
        """An attempt began and has not been counted yet (a cancel or the overall deadline may end it)."""

    def begin(self) -> None:
        self.open = True

    def attempt(self, error_kind: str | None, *, first_token_s: float | None = None) -> None:
        """One attempt ended (`error_kind` None: it succeeded), and its time to first token."""
        self.open = False
        metrics = _metrics
        if metrics is None:
            return
        kind = bounded_kind(error_kind) if error_kind else "none"
        outcome = "ok" if error_kind is None else "cancelled" if error_kind == "cancelled" else "error"
        metrics.attempts.labels(self.model, outcome, kind).inc()
        if first_token_s is not None:
            metrics.first_token.labels(self.model).observe(first_token_s)

    def retry(self, error: KimiError, attempt: int, delay_s: float) -> None:
        """Attempt `attempt` failed with `error`; the next starts after `delay_s`."""
        if _metrics is not None:
            _metrics.retries.labels(self.model, bounded_kind(error.kind)).inc()
        if self.span.is_recording():
            attributes: dict[str, Any] = {"kimi_mcp.attempt": attempt, "error.type": error.kind,
                                          "kimi_mcp.retry.delay_s": round(delay_s, 3)}
            if error.status is not None:
                attributes["http.response.status_code"] = error.status
            self.span.add_event(RETRY_EVENT, attributes)

    def finished(self, *, response_id: str, response_model: str, finish_reason: str | None, usage: TokenCounts,
                 attempts: int, first_token_s: float | None, cost_usd: float | None) -> None:
        """The call succeeded: what the reply says about itself, and what it spent."""
        metrics = _metrics
        if metrics is not None:
            metrics.tokens.labels(self.model, "input").inc(max(usage.prompt_tokens, 0))
            metrics.tokens.labels(self.model, "output").inc(max(usage.completion_tokens, 0))
            if usage.cached_tokens:
                metrics.cached_tokens.labels(self.model).inc(max(usage.cached_tokens, 0))
            if usage.reasoning_tokens:
                metrics.reasoning_tokens.labels(self.model).inc(max(usage.reasoning_tokens, 0))
            if cost_usd is not None:
                metrics.cost.labels(self.model).inc(max(cost_usd, 0.0))
        if not self.span.is_recording():
            return
        attributes: dict[str, Any] = {
            "gen_ai.response.model": response_model or self.model,
            "gen_ai.usage.input_tokens": usage.prompt_tokens,
            "gen_ai.usage.output_tokens": usage.completion_tokens,
            "kimi_mcp.attempts": attempts,
        }
        if response_id:
            attributes["gen_ai.response.id"] = response_id
        if finish_reason:
            attributes["gen_ai.response.finish_reasons"] = [finish_reason]
        if usage.cached_tokens is not None:
            attributes["gen_ai.usage.cache_read.input_tokens"] = usage.cached_tokens
        if usage.reasoning_tokens is not None:
            attributes["gen_ai.usage.reasoning.output_tokens"] = usage.reasoning_tokens
        if first_token_s is not None:
            attributes["gen_ai.response.time_to_first_chunk"] = round(first_token_s, 6)
        if cost_usd is not None:
            attributes["kimi_mcp.cost_estimate_usd"] = cost_usd
        self.span.set_attributes(attributes)


def queue_wait(seconds: float) -> None:
    """An attempt got its slot under the concurrency cap after waiting this long."""
    if _metrics is not None:
        _metrics.queue_wait.observe(seconds)


def _request_attributes(body: Mapping[str, Any]) -> dict[str, Any]:
    """The request's settings that are numbers or choices (never its messages or stop strings)."""
    out: dict[str, Any] = {}
    for key, name in (("max_tokens", "gen_ai.request.max_tokens"), ("temperature", "gen_ai.request.temperature"),
                      ("top_p", "gen_ai.request.top_p")):
        value = body.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool):
            out[name] = value
    response_format = body.get("response_format")
    json_mode = isinstance(response_format, dict) and response_format.get("type") == "json_object"
    out["gen_ai.output.type"] = "json" if json_mode else "text"
    effort = body.get("reasoning_effort")
    if isinstance(effort, str) and effort:
        out["kimi_mcp.request.reasoning_effort"] = effort
    out["kimi_mcp.request.stream"] = body.get("stream") is True
    return out


@contextmanager
def upstream_call(body: Mapping[str, Any], *, address: str, port: int | None) -> Iterator[UpstreamCall]:
    """A CLIENT span `chat {model}` around one upstream call (a child of the MCP server span of the
    tool call, when there is one), following the GenAI semantic conventions; a failure sets
    `error.type` to the error's kind. Also times the call for the metrics."""
    model = str(body.get("model") or "")
    note(model=model)
    call_info = _CALL.get()
    attributes: dict[str, Any] = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": PROVIDER,
        "gen_ai.request.model": model,
        "server.address": address,
    }
    if port is not None:
        attributes["server.port"] = port
    if call_info is not None and call_info.conversation_id:
        attributes["gen_ai.conversation.id"] = call_info.conversation_id
    attributes.update(_request_attributes(body))
    with _tracer.start_as_current_span(f"chat {model}", kind=SpanKind.CLIENT, attributes=attributes,
                                       record_exception=False, set_status_on_exception=False) as span:
        call = UpstreamCall(span, model)
        outcome = "error"
        try:
            yield call
            outcome = "ok"
        except KimiError as error:
            if call.open:  # the overall deadline ended an attempt
                call.attempt(error.kind)
            span.set_attribute("error.type", error.kind)
            span.set_status(StatusCode.ERROR, error.kind)
            raise
        except BaseException as exc:
            kind = "cancelled" if _cancelled(exc) else type(exc).__qualname__
            outcome = "cancelled" if kind == "cancelled" else "error"
            if call.open:
                call.attempt(kind if kind == "cancelled" else "internal")
            span.set_attribute("error.type", kind)
            span.set_status(StatusCode.ERROR, kind)
            raise
        finally:
            if _metrics is not None:
                _metrics.upstream_seconds.labels(model, outcome).observe(time.monotonic() - call.started)


# --------------------------------------------------------------------------- metrics

class _Slots(Protocol):
    """A concurrency limiter (anyio's CapacityLimiter) whose statistics feed two gauges."""

    def statistics(self) -> Any: ...


class _Background(Protocol):
    def background(self) -> int:
        """Answers still being generated that no tool call waits for."""
        ...


_slots: weakref.WeakSet[Any] = weakref.WeakSet()
_backgrounds: weakref.WeakSet[Any] = weakref.WeakSet()


def watch_slots(limiter: _Slots) -> None:
    """The upstream client's concurrency cap: its borrowed and waiting counts become gauges."""
    _slots.add(limiter)


def watch_background(source: _Background) -> None:
    """A set of background answers, counted by the `kimi_mcp_background_answers` gauge."""
    _backgrounds.add(source)


def _slot_figure(name: str) -> float:
    return float(sum(getattr(limiter.statistics(), name) for limiter in list(_slots)))


LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0, 900.0)
FIRST_TOKEN_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 30.0, 60.0, 120.0, 300.0)
QUEUE_BUCKETS = (0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)


class _Metrics:
    """The process's Prometheus series, in a registry of their own (each process is its own
    replica: Prometheus scrapes each and sums)."""

    def __init__(self) -> None:
        from prometheus_client import (
            CollectorRegistry,
            Counter,
            Gauge,
            GCCollector,
            Histogram,
            Info,
            PlatformCollector,
            ProcessCollector,
            disable_created_metrics,
        )

        # No `_created` twin for every series: half the lines, nothing lost.
        disable_created_metrics()  # type: ignore[no-untyped-call]
        registry = self.registry = CollectorRegistry()
        ProcessCollector(registry=registry)
        PlatformCollector(registry=registry)
        GCCollector(registry=registry)
        Info("kimi_mcp_build", "The kimi-mcp version serving", registry=registry).info({"version": __version__})
        self.calls = Counter("kimi_mcp_tool_calls", "Tool calls by tool, outcome (ok, partial, error, cancelled) "
                             "and error kind", ["tool", "outcome", "error_kind"], registry=registry)
        self.call_seconds = Histogram("kimi_mcp_tool_call_duration_seconds", "Tool call latency, start to result",
                                      ["tool", "outcome"], buckets=LATENCY_BUCKETS, registry=registry)
        self.in_flight = Gauge("kimi_mcp_tool_calls_in_flight", "Tool calls being served now", ["tool"],
                               registry=registry)
        background = Gauge("kimi_mcp_background_answers", "Answers still generating after their call handed over "
                           "a partial answer (soft deadline), nobody waiting on them", registry=registry)
        background.set_function(lambda: float(sum(source.background() for source in list(_backgrounds))))
        self.attempts = Counter("kimi_mcp_upstream_attempts", "Upstream requests (attempts, retries included) by "
                                "model, outcome and error kind", ["model", "outcome", "error_kind"], registry=registry)
        self.retries = Counter("kimi_mcp_upstream_retries", "Upstream requests retried, by model and the error "
                               "that caused the retry", ["model", "error_kind"], registry=registry)
        self.upstream_seconds = Histogram("kimi_mcp_upstream_duration_seconds", "Upstream call latency, all "
                                          "attempts and waits included", ["model", "outcome"],
                                          buckets=LATENCY_BUCKETS, registry=registry)
        self.first_token = Histogram("kimi_mcp_upstream_time_to_first_token_seconds", "Streamed attempts: from "
                                     "sending the request to the first answer or reasoning token", ["model"],
                                     buckets=FIRST_TOKEN_BUCKETS, registry=registry)
        self.queue_wait = Histogram("kimi_mcp_upstream_queue_wait_seconds", "Time an attempt waited for a slot "
                                    "under KIMI_MAX_CONCURRENCY", buckets=QUEUE_BUCKETS, registry=registry)
        queued = Gauge("kimi_mcp_upstream_queued", "Upstream requests waiting for a slot now", registry=registry)
        queued.set_function(lambda: _slot_figure("tasks_waiting"))
        active = Gauge("kimi_mcp_upstream_in_flight", "Upstream requests holding a slot now", registry=registry)
        active.set_function(lambda: _slot_figure("borrowed_tokens"))
        self.tokens = Counter("kimi_mcp_tokens", "Tokens the upstream reported, by model and type (input, output)",
                              ["model", "type"], registry=registry)
        self.cached_tokens = Counter("kimi_mcp_cached_input_tokens", "Input tokens served from the upstream's "
                                     "cache (part of the input tokens)", ["model"], registry=registry)
        self.reasoning_tokens = Counter("kimi_mcp_reasoning_tokens", "Reasoning tokens (part of the output "
                                        "tokens), where reported", ["model"], registry=registry)
        self.cost = Counter("kimi_mcp_estimated_cost_usd", "Estimated cost in US dollars from the price table "
                            "(an estimate, not a bill; models without prices are not counted)", ["model"],
                            registry=registry)


_metrics: _Metrics | None = None


def enable_metrics() -> None:
    """Start counting (once per process); without prometheus-client a `SettingsError` naming the extra."""
    global _metrics
    if _metrics is not None:
        return
    try:
        import prometheus_client  # noqa: F401
    except ImportError:
        raise SettingsError("KIMI_METRICS is on, but prometheus-client is not installed: "
                            "pip install 'kimi-mcp[metrics]'") from None
    _metrics = _Metrics()


def metrics_enabled() -> bool:
    return _metrics is not None


def metrics_text() -> tuple[bytes, str]:
    """The series in Prometheus's text format, and its content type."""
    if _metrics is None:
        raise RuntimeError("metrics are not enabled")
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    return generate_latest(_metrics.registry), CONTENT_TYPE_LATEST


# --------------------------------------------------------------------------- exporting traces


@dataclass(frozen=True, slots=True)
class TracingPlan:
    """Where spans go, as the standard OpenTelemetry variables say: exporter names, and for OTLP
    the protocol and the traces endpoint (credentials masked)."""

    exporters: tuple[str, ...]
    protocol: str = ""
    endpoint: str = ""
    service: str = SERVICE_NAME

    def describe(self) -> str:
        parts = []
        for name in self.exporters:
            parts.append(f"OTLP ({self.protocol}) to {self.endpoint}" if name == "otlp" else f"{name} (stderr)")
        return f"{', '.join(parts)}; service.name {self.service}"


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


def _masked_url(url: str) -> str:
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return parts._replace(netloc="****@" + parts.netloc.rpartition("@")[2]).geturl()


def tracing_plan(env: Mapping[str, str] | None = None) -> TracingPlan | None:
    """None when the environment asks for no spans (no OTLP endpoint, no OTEL_TRACES_EXPORTER, or
    it is `none`, or OTEL_SDK_DISABLED): then nothing is configured and the API stays a no-op."""
    env = os.environ if env is None else env
    if _truthy(env.get("OTEL_SDK_DISABLED")):
        return None
    named = [n.strip().lower() for n in env.get("OTEL_TRACES_EXPORTER", "").split(",") if n.strip()]
    if not named and (env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")):
        named = ["otlp"]
    exporters = tuple(dict.fromkeys(n for n in named if n != "none"))
    if not exporters:
        return None
    service = env.get("OTEL_SERVICE_NAME", "").strip() or SERVICE_NAME
    if "otlp" not in exporters:
        return TracingPlan(exporters, service=service)
    protocol = (env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or env.get("OTEL_EXPORTER_OTLP_PROTOCOL")
                or "http/protobuf").strip().lower()
    endpoint = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "").strip()
    if not endpoint:
        base = env.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip()
        if protocol == "grpc":
            endpoint = base or "http://localhost:4317"
        else:
            endpoint = (base.rstrip("/") or "http://localhost:4318") + "/v1/traces"
    return TracingPlan(exporters, protocol, _masked_url(endpoint), service)


def tracing_problem(plan: TracingPlan) -> str | None:
    """Why the plan cannot run here (a missing package, an exporter we do not build), or None."""
    try:
        import opentelemetry.sdk.trace  # noqa: F401
    except ImportError:
        return "the OpenTelemetry SDK is not installed: pip install 'kimi-mcp[otel]'"
    unknown = [name for name in plan.exporters if name not in ("otlp", "console")]
    if unknown:
        return f"OTEL_TRACES_EXPORTER {', '.join(unknown)} is not supported here (otlp or console)"
    if "otlp" in plan.exporters:
        module = "grpc" if plan.protocol == "grpc" else "http"
        if plan.protocol not in ("grpc", "http/protobuf"):
            return f"OTLP protocol {plan.protocol!r} is not supported here (http/protobuf or grpc)"
        try:
            importlib.import_module(f"opentelemetry.exporter.otlp.proto.{module}.trace_exporter")
        except ImportError:
            return (f"the OTLP {plan.protocol} exporter is not installed: pip install "
                    f"opentelemetry-exporter-otlp-proto-{module}")
    return None


def configure_tracing(env: Mapping[str, str] | None = None) -> TracingPlan | None:
    """At start-up: when the environment asks for spans, install the SDK's TracerProvider with its
    exporters (batched, flushed at exit). A provider already installed (e.g. by
    `opentelemetry-instrument`) is kept. A plan that cannot run is one warning; serving goes on."""
    plan = tracing_plan(env)
    if plan is None:
        return None
    if not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
        log.info("traces: an OpenTelemetry tracer provider is already installed; using it")
        return plan
    problem = tracing_problem(plan)
    if problem is not None:
        log.warning("traces are off: %s", problem)
        return None
    from opentelemetry.sdk.resources import SERVICE_NAME as SERVICE_KEY
    from opentelemetry.sdk.resources import SERVICE_VERSION, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter

    resource = Resource.create({SERVICE_KEY: plan.service, SERVICE_VERSION: __version__})
    provider = TracerProvider(resource=resource)
    for name in plan.exporters:
        exporter: SpanExporter
        if name == "console":
            exporter = ConsoleSpanExporter(out=sys.stderr)  # stdout is the protocol over stdio
        elif plan.protocol == "grpc":
            grpc = importlib.import_module("opentelemetry.exporter.otlp.proto.grpc.trace_exporter")
            exporter = grpc.OTLPSpanExporter()
        else:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            exporter = OTLPSpanExporter()
        provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    log.info("traces: %s", plan.describe())
    return plan


def flush_tracing(timeout_s: float = 5.0) -> None:
    """Export the spans still batched (blocking, at most `timeout_s`): at an HTTP server's shutdown,
    since uvicorn ends the process by re-raising SIGTERM, before any exit hook could run."""
    flush = getattr(trace.get_tracer_provider(), "force_flush", None)
    if callable(flush):
        flush(int(timeout_s * 1000))


def env_secrets(env: Mapping[str, str] | None = None) -> tuple[str, ...]:
    """Credentials the OpenTelemetry variables may hold (OTLP header values, an endpoint's
    password), masked in every log line like the tokens."""
    env = os.environ if env is None else env
    found: list[str] = []
    for name in ("OTEL_EXPORTER_OTLP_HEADERS", "OTEL_EXPORTER_OTLP_TRACES_HEADERS"):
        for item in env.get(name, "").split(","):
            value = item.partition("=")[2].strip()
            found += [value, unquote(value)]
    for name in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        netloc = urlsplit(env.get(name, "").strip()).netloc
        password = netloc.rpartition("@")[0].partition(":")[2] if "@" in netloc else ""
        found += [password, unquote(password)]
    return tuple(dict.fromkeys(v for v in found if v))
