"""Traces through a real in-memory MCP client, captured with the OpenTelemetry SDK's in-memory exporter,
and exported over OTLP/HTTP by a real server subprocess to a loopback collector.

Each upstream call is a CLIENT span `chat {model}` under the SDK's server span of the tool call,
with the GenAI semantic conventions' attributes (operation, provider, request and response model,
finish reasons, conversation id, token counts with cache and reasoning, server address and port),
retries as events, `error.type` (the error's kind) on failure, and never the prompt, the answer,
the system prompt or the token in any span. A server configured only by the standard OTEL_*
variables sends its spans (with the headers those variables name) where they say.
"""

from __future__ import annotations

import json
import threading
from collections.abc import AsyncIterator, Iterator, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

import anyio
import pytest
from mcp import Client
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, TracerProvider
from opentelemetry.trace import SpanKind, StatusCode

from kimi_mcp.telemetry import PROVIDER, RETRY_EVENT
from tests.mcp.helpers import call, error_of, ok
from tests.support.fake_ace import FakeAce, ace_error, reply
from tests.support.harness import ServerLog, connect
from tests.support.models import DEFAULT_ID

pytestmark = pytest.mark.anyio

PROMPT = "Whisper the launch code riddle"
SYSTEM = "You are the keeper of secret-sounding prompts"
ANSWER = "A private answer nobody may trace"
USAGE = {"prompt_tokens": 11, "completion_tokens": 22, "total_tokens": 33,
         "prompt_tokens_details": {"cached_tokens": 5}, "completion_tokens_details": {"reasoning_tokens": 7}}


class Capture(SpanProcessor):
    """Keeps finished spans while a test captures (the provider is process-wide and stays installed,
    so outside a capture nothing piles up)."""

    def __init__(self) -> None:
        self.spans: list[ReadableSpan] | None = None

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        pass

    def on_end(self, span: ReadableSpan) -> None:
        if self.spans is not None:
            self.spans.append(span)


_capture = Capture()


def _install() -> Capture:
    """The SDK's provider, installed once for the process (OpenTelemetry allows one global provider)."""
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = TracerProvider()
        trace.set_tracer_provider(provider)
    provider.add_span_processor(_capture)
    return _capture


@pytest.fixture(scope="module")
def capture() -> Iterator[Capture]:
    found = _install()
    yield found
    found.spans = None


@pytest.fixture
def spans(capture: Capture) -> Iterator[list[ReadableSpan]]:
    capture.spans = []
    yield capture.spans
    capture.spans = None


@pytest.fixture(scope="module")
async def client(fake: FakeAce, capture: Capture) -> AsyncIterator[Client]:
    async with connect("memory", fake, env={"KIMI_MAX_RETRIES": "1"}) as connected:
        yield connected


def upstream_spans(spans: Sequence[ReadableSpan]) -> list[ReadableSpan]:
    return [s for s in spans if s.kind is SpanKind.CLIENT and s.name.startswith("chat ")]


def only_upstream(spans: Sequence[ReadableSpan]) -> ReadableSpan:
    found = upstream_spans(spans)
    assert len(found) == 1, [s.name for s in spans]
    return found[0]


def server_span(spans: Sequence[ReadableSpan], tool: str) -> ReadableSpan:
    (found,) = [s for s in spans if s.kind is SpanKind.SERVER and s.name == f"tools/call {tool}"]
    return found


def everything_in(spans: Sequence[ReadableSpan]) -> str:
    """Every name, attribute and event of the spans, as text (to search for what must not be there)."""
    parts: list[Any] = []
    for span in spans:
        parts += [span.name, dict(span.attributes or {}), span.status.description or ""]
        parts += [[event.name, dict(event.attributes or {})] for event in span.events]
    return json.dumps(parts, default=str)


async def test_an_upstream_call_is_a_client_span_with_the_genai_attributes(
        client: Client, fake: FakeAce, spans: list[ReadableSpan]) -> None:
    fake.script(reply(ANSWER, usage=USAGE, shape="ace"))  # Ace's stream shape reports cache and reasoning
    result = ok(await call(client, "kimi_chat", {"prompt": PROMPT, "system": SYSTEM}))
    span = only_upstream(spans)
    attributes = dict(span.attributes or {})
    assert span.name == f"chat {DEFAULT_ID}"
    base = urlsplit(fake.base_url)
    assert attributes == attributes | {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": PROVIDER,
        "gen_ai.request.model": DEFAULT_ID,
        "gen_ai.response.model": DEFAULT_ID,
        "gen_ai.response.finish_reasons": ("stop",),
        "gen_ai.conversation.id": result["conversation_id"],
        "gen_ai.usage.input_tokens": 11,
        "gen_ai.usage.output_tokens": 22,
        "gen_ai.usage.cache_read.input_tokens": 5,
        "gen_ai.usage.reasoning.output_tokens": 7,
        "gen_ai.output.type": "text",
        "server.address": base.hostname,
        "server.port": base.port,
        "kimi_mcp.attempts": 1,
    }
    assert attributes["gen_ai.response.id"] == result["id"]
    assert "error.type" not in attributes and span.status.status_code is not StatusCode.ERROR
    assert span.events == ()
    # A child of the MCP SDK's server span of this tool call, in the same trace.
    parent = server_span(spans, "kimi_chat")
    assert span.parent is not None and span.parent.span_id == parent.context.span_id
    assert span.context.trace_id == parent.context.trace_id
    # The conversation id follows the conversation.
    fake.script(reply(ANSWER, usage=USAGE))
    spans.clear()
    ok(await call(client, "kimi_chat", {"prompt": "and again", "conversation_id": result["conversation_id"]}))
    assert dict(only_upstream(spans).attributes or {})["gen_ai.conversation.id"] == result["conversation_id"]


async def test_a_retried_call_carries_each_retry_as_an_event(
        client: Client, fake: FakeAce, spans: list[ReadableSpan]) -> None:
    fake.script(ace_error(503, "service_unavailable", "try later", headers={"Retry-After": "0"}), reply(ANSWER))
    assert ok(await call(client, "kimi_chat", {"prompt": PROMPT}))["attempts"] == 2
    span = only_upstream(spans)
    assert [event.name for event in span.events] == [RETRY_EVENT]
    event = dict(span.events[0].attributes or {})
    assert event == event | {"kimi_mcp.attempt": 1, "error.type": "upstream", "http.response.status_code": 503}
    attributes = dict(span.attributes or {})
    assert attributes["kimi_mcp.attempts"] == 2 and "error.type" not in attributes


async def test_a_failed_call_sets_error_type_to_its_kind(
        client: Client, fake: FakeAce, spans: list[ReadableSpan]) -> None:
    fake.script(ace_error(401, "invalid_token", "The specified token is invalid or wrong."))
    assert error_of(await call(client, "kimi_chat", {"prompt": PROMPT}))["kind"] == "auth"
    span = only_upstream(spans)
    assert dict(span.attributes or {})["error.type"] == "auth"
    assert span.status.status_code is StatusCode.ERROR
    assert "gen_ai.usage.input_tokens" not in (span.attributes or {})
    # The SDK marks its own server span of a tool error too.
    assert dict(server_span(spans, "kimi_chat").attributes or {})["error.type"] == "tool_error"


async def test_kimi_json_asks_for_json_output(client: Client, fake: FakeAce, spans: list[ReadableSpan]) -> None:
    ok(await call(client, "kimi_json", {"prompt": PROMPT}))
    span = only_upstream(spans)
    assert dict(span.attributes or {})["gen_ai.output.type"] == "json"
    assert span.parent is not None and span.parent.span_id == server_span(spans, "kimi_json").context.span_id


async def test_no_span_carries_the_prompt_the_answer_or_the_token(
        client: Client, fake: FakeAce, spans: list[ReadableSpan]) -> None:
    fake.script(ace_error(500, "server_error", "boom"), reply(ANSWER, reasoning="Secret reasoning steps here"))
    ok(await call(client, "kimi_chat", {"prompt": PROMPT, "system": SYSTEM}))
    fake.script(reply(json.dumps({"answer": ANSWER})))
    ok(await call(client, "kimi_json", {"prompt": PROMPT, "system": SYSTEM}))
    assert len(upstream_spans(spans)) == 2 and len(spans) > 2
    seen = everything_in(spans)
    for private in (PROMPT, SYSTEM, ANSWER, "Secret reasoning", fake.token):
        assert private not in seen


# --------------------------------------------------------------------------- OTLP export from a server process


class Collector(ThreadingHTTPServer):
    """A loopback OTLP/HTTP trace receiver: keeps each export request's headers and spans."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Receive)
        self.received: list[tuple[dict[str, str], ExportTraceServiceRequest, bytes]] = []
        self.lock = threading.Lock()
        self.upstream_span = threading.Event()
        """Set once a `chat ...` span arrived."""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def spans(self) -> list[Any]:
        with self.lock:
            return [span for _, request, _ in self.received for resource in request.resource_spans
                    for scope in resource.scope_spans for span in scope.spans]


class _Receive(BaseHTTPRequestHandler):
    server: Collector

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        request = ExportTraceServiceRequest()
        request.ParseFromString(body)
        with self.server.lock:
            self.server.received.append(({k.lower(): v for k, v in self.headers.items()}, request, body))
        if any(span.name.startswith("chat ") for span in self.server.spans()):
            self.server.upstream_span.set()
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


def attribute(span: Any, key: str) -> Any:
    for item in span.attributes:
        if item.key == key:
            value = item.value
            return getattr(value, value.WhichOneof("value"))
    return None


async def test_a_server_sends_its_spans_where_the_otel_variables_say(fake: FakeAce) -> None:
    collector = Collector()
    thread = threading.Thread(target=collector.serve_forever, daemon=True)
    thread.start()
    api_key = "collector-key-0123456789abcdef"
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": collector.url, "OTEL_EXPORTER_OTLP_HEADERS": f"x-api-key={api_key}",
           "OTEL_SERVICE_NAME": "kimi-under-test", "OTEL_BSP_SCHEDULE_DELAY": "50"}
    log = ServerLog()
    try:
        async with connect("http", fake, env=env, log=log) as remote:
            fake.script(reply(ANSWER))
            ok(await call(remote, "kimi_chat", {"prompt": PROMPT}))
            await anyio.to_thread.run_sync(collector.upstream_span.wait, 20)  # batched: exported within ~50 ms
        spans = collector.spans()
        (upstream,) = [s for s in spans if s.name == f"chat {DEFAULT_ID}"]
        assert attribute(upstream, "gen_ai.provider.name") == PROVIDER
        assert attribute(upstream, "gen_ai.operation.name") == "chat"
        (server,) = [s for s in spans if s.name == "tools/call kimi_chat"]
        assert upstream.parent_span_id == server.span_id and upstream.trace_id == server.trace_id
        headers, request, _ = collector.received[0]
        assert headers["x-api-key"] == api_key
        resource = {item.key: item.value.string_value for item in request.resource_spans[0].resource.attributes}
        assert resource["service.name"] == "kimi-under-test"
        with collector.lock:
            sent = b"".join(body for _, _, body in collector.received)
        for private in (PROMPT, ANSWER, fake.token):
            assert private.encode() not in sent
        assert api_key not in log.text() and fake.token not in log.text()
    finally:
        collector.shutdown()
        collector.server_close()
