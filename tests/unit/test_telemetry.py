"""`kimi_mcp.telemetry` and the JSON log format, without sockets: the call context, a tool call's
outcome (cancellation included) in fresh metrics, bounded labels, reading the OTEL_* variables, the
credentials they may hold, and JSON log lines that parse and mask every secret."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import anyio
import pytest
from prometheus_client import generate_latest

from kimi_mcp import telemetry
from kimi_mcp.redaction import MASK, JsonFormatter, RedactingFilter

TOKEN = "sk-ace-UNIT-TEST-token-9f8e7d6c5b4a"


@pytest.fixture
def metrics(monkeypatch: pytest.MonkeyPatch) -> Iterator[telemetry._Metrics]:
    """Fresh series for one test (the process's own, if any, are put back afterwards)."""
    fresh = telemetry._Metrics()
    monkeypatch.setattr(telemetry, "_metrics", fresh)
    yield fresh


def value(metrics: telemetry._Metrics, name: str, **labels: str) -> float:
    found = metrics.registry.get_sample_value(name, labels)
    return 0.0 if found is None else found


# --------------------------------------------------------------------------- call context and outcomes


def test_a_tool_call_shares_its_context_with_the_work_it_starts() -> None:
    assert telemetry.current_call() is None
    with telemetry.tool_call("kimi_chat", request_id="7", principal="alice") as call:
        telemetry.note(model="kimi-k3", conversation_id="conv_1")
        assert telemetry.current_call() is call.info
        assert (call.info.tool, call.info.request_id, call.info.principal, call.info.model,
                call.info.conversation_id) == ("kimi_chat", "7", "alice", "kimi-k3", "conv_1")
        call.end("ok")
    assert telemetry.current_call() is None


@pytest.mark.anyio
async def test_tool_call_outcomes_in_the_metrics(metrics: telemetry._Metrics) -> None:
    with telemetry.tool_call("kimi_chat") as call:
        assert value(metrics, "kimi_mcp_tool_calls_in_flight", tool="kimi_chat") == 1
        call.end("error", "rate_limited")
    with telemetry.tool_call("kimi_chat") as call:
        call.end("error", "something-a-client-made-up")
    with anyio.move_on_after(0.01), telemetry.tool_call("kimi_chat"):
        await anyio.sleep(10)  # cancelled: never said how it ended
    with pytest.raises(ZeroDivisionError), telemetry.tool_call("kimi_json"):
        _ = 1 / 0
    calls = "kimi_mcp_tool_calls_total"
    assert value(metrics, calls, tool="kimi_chat", outcome="error", error_kind="rate_limited") == 1
    assert value(metrics, calls, tool="kimi_chat", outcome="error", error_kind="other") == 1  # bounded
    assert value(metrics, calls, tool="kimi_chat", outcome="cancelled", error_kind="cancelled") == 1
    assert value(metrics, calls, tool="kimi_json", outcome="error", error_kind="internal") == 1
    assert value(metrics, "kimi_mcp_tool_call_duration_seconds_count", tool="kimi_chat", outcome="error") == 2
    assert value(metrics, "kimi_mcp_tool_calls_in_flight", tool="kimi_chat") == 0
    assert b"kimi_mcp_tool_calls_total" in generate_latest(metrics.registry)


def test_every_error_kind_is_a_known_label() -> None:
    for kind in ("auth", "rate_limited", "upstream", "timeout", "network", "invalid_response", "storage",
                 "cancelled", "interrupted", "internal", "invalid_arguments", "invalid_json"):
        assert telemetry.bounded_kind(kind) == kind
    assert telemetry.bounded_kind("conv_abc123") == "other"


def test_without_metrics_nothing_is_counted_and_nothing_is_served(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(telemetry, "_metrics", None)
    with telemetry.tool_call("kimi_chat") as call:
        call.end("ok")
    assert not telemetry.metrics_enabled()
    with pytest.raises(RuntimeError):
        telemetry.metrics_text()


# --------------------------------------------------------------------------- OTEL_* variables


def test_no_variables_no_spans() -> None:
    assert telemetry.tracing_plan({}) is None
    assert telemetry.tracing_plan({"OTEL_TRACES_EXPORTER": "none",
                                   "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}) is None
    assert telemetry.tracing_plan({"OTEL_SDK_DISABLED": "true",
                                   "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}) is None
    assert telemetry.configure_tracing({}) is None


@pytest.mark.parametrize(("env", "described"), [
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318/"},
     "OTLP (http/protobuf) to http://collector:4318/v1/traces; service.name kimi-mcp"),
    ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "https://c.example/custom", "OTEL_SERVICE_NAME": "prod"},
     "OTLP (http/protobuf) to https://c.example/custom; service.name prod"),
    ({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"},
     "OTLP (grpc) to http://localhost:4317; service.name kimi-mcp"),
    ({"OTEL_TRACES_EXPORTER": "console,otlp"},
     "console (stderr), OTLP (http/protobuf) to http://localhost:4318/v1/traces; service.name kimi-mcp"),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "https://key:s3cret-pass@c.example"},
     "OTLP (http/protobuf) to https://****@c.example/v1/traces; service.name kimi-mcp"),
])
def test_the_plan_follows_the_standard_variables(env: dict[str, str], described: str) -> None:
    plan = telemetry.tracing_plan(env)
    assert plan is not None and plan.describe() == described


def test_a_plan_that_cannot_run_says_why() -> None:
    plan = telemetry.tracing_plan({"OTEL_TRACES_EXPORTER": "zipkin"})
    assert plan is not None and "zipkin is not supported" in (telemetry.tracing_problem(plan) or "")
    plan = telemetry.tracing_plan({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"})
    assert plan is not None and "http/json" in (telemetry.tracing_problem(plan) or "")
    plan = telemetry.tracing_plan({"OTEL_TRACES_EXPORTER": "otlp"})
    assert plan is not None and telemetry.tracing_problem(plan) is None  # the test extra installs it


def test_credentials_in_the_variables_are_secrets() -> None:
    found = telemetry.env_secrets({
        "OTEL_EXPORTER_OTLP_HEADERS": "x-api-key=abc%3D123,other=plain-value",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "https://user:pa%40ss@c.example",
    })
    assert {"abc%3D123", "abc=123", "plain-value", "pa%40ss", "pa@ss"} <= set(found)
    assert telemetry.env_secrets({}) == ()


# --------------------------------------------------------------------------- JSON logs


def test_json_lines_parse_carry_the_call_and_mask_secrets() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter((TOKEN,)))
    handler.addFilter(RedactingFilter((TOKEN,)))
    logger = logging.getLogger("kimi_mcp.tests.json")
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    logger.addHandler(handler)
    try:
        logger.info("outside any call, line\nbreak")
        with telemetry.tool_call("kimi_chat", request_id="42", principal="alice") as call:
            telemetry.note(model="kimi-k3")
            logger.warning("token %s leaked", TOKEN, extra={"error_kind": f"weird {TOKEN}"})
            try:
                raise RuntimeError(f"Authorization: Bearer {TOKEN}")
            except RuntimeError:
                logger.exception("failed")
            call.end("ok")
    finally:
        logger.removeHandler(handler)
    text = stream.getvalue()
    assert TOKEN not in text
    lines = [json.loads(line) for line in text.splitlines()]
    assert len(lines) == 3
    first, warned, failed = lines
    assert set(first) == {"timestamp", "level", "logger", "message"}
    assert first["level"] == "INFO" and first["logger"] == "kimi_mcp.tests.json"
    assert first["timestamp"].endswith("Z") and "T" in first["timestamp"]
    assert warned["message"] == f"token {MASK} leaked" and warned["error_kind"] == f"weird {MASK}"
    assert (warned["request_id"], warned["principal"], warned["tool"], warned["model"]) == (
        "42", "alice", "kimi_chat", "kimi-k3")
    assert "RuntimeError: Authorization: Bearer ****" in failed["exception"]


def test_a_tool_calls_closing_line_has_its_duration_and_outcome(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="kimi_mcp.calls"), \
            telemetry.tool_call("kimi_json", request_id="1", principal="local") as call:
        call.end("error", "invalid_json")
    (record,) = [r for r in caplog.records if r.name == "kimi_mcp.calls"]
    assert record.getMessage().startswith("kimi_json error (invalid_json) in ")
    assert record.__dict__["outcome"] == "error" and record.__dict__["error_kind"] == "invalid_json"
    assert isinstance(record.__dict__["duration_s"], float)
