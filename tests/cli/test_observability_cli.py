"""The command line and observability: `kimi-mcp doctor` says whether traces and metrics are on and
where they go (a problem only when one is asked for and cannot work), and serving metrics without
prometheus-client stops start-up with one line naming the extra."""

from __future__ import annotations

import sys

import pytest

from kimi_mcp import telemetry
from tests.cli.helpers import Cli, check_lines

OTEL_VARIABLES = ("OTEL_SDK_DISABLED", "OTEL_TRACES_EXPORTER", "OTEL_EXPORTER_OTLP_ENDPOINT",
                  "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_PROTOCOL",
                  "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_SERVICE_NAME", "OTEL_EXPORTER_OTLP_HEADERS")


@pytest.fixture(autouse=True)
def _no_otel(monkeypatch: pytest.MonkeyPatch) -> None:
    """Whatever the machine running the suite exports, these tests choose the OTEL_* variables."""
    for name in OTEL_VARIABLES:
        monkeypatch.delenv(name, raising=False)


def info(output: str, name: str) -> str:
    (line,) = [line for line in output.splitlines() if line.startswith("info") and line.split()[1] == name]
    return line


def test_doctor_says_both_are_off_by_default(cli: Cli, env: dict[str, str]) -> None:
    run = cli("doctor", "--no-call", env=env)
    assert run.returncode == 0, run.stdout
    assert "off" in info(run.stdout, "traces") and "OTEL_EXPORTER_OTLP_ENDPOINT" in info(run.stdout, "traces")
    assert "off" in info(run.stdout, "metrics") and "KIMI_METRICS" in info(run.stdout, "metrics")
    assert [c[1] for c in check_lines(run.stdout)] == ["settings", "token", "store", "base URL", "call"]


def test_doctor_says_where_spans_and_metrics_go(cli: Cli, env: dict[str, str]) -> None:
    secret = "collector-api-key-0123456789abcdef"
    run = cli("doctor", "--no-call", env={
        **env, "OTEL_EXPORTER_OTLP_ENDPOINT": "http://user:hunter2-password-xyz@collector.internal:4318",
        "OTEL_EXPORTER_OTLP_HEADERS": f"x-api-key={secret}", "OTEL_SERVICE_NAME": "kimi-prod",
        "KIMI_METRICS": "true", "KIMI_TRANSPORT": "streamable-http", "KIMI_PORT": "9100",
        "KIMI_MCP_AUTH_TOKENS": "alice:alice-tok-1234567890abcdef1234",
    })
    assert run.returncode == 0, run.stdout
    traces = info(run.stdout, "traces")
    assert "on: OTLP (http/protobuf) to http://****@collector.internal:4318/v1/traces" in traces
    assert "service.name kimi-prod" in traces
    metrics = info(run.stdout, "metrics")
    assert "on: http://127.0.0.1:9100/metrics" in metrics and "client token" in metrics
    for private in (secret, "hunter2-password-xyz", "alice-tok-1234567890abcdef1234"):
        assert private not in run.stdout + run.stderr
    opened = cli("doctor", "--no-call", env={**env, "OTEL_TRACES_EXPORTER": "console", "KIMI_METRICS": "true",
                                             "KIMI_METRICS_OPEN": "true", "KIMI_TRANSPORT": "sse"})
    assert "on: console (stderr)" in info(opened.stdout, "traces")
    assert "open to anyone" in info(opened.stdout, "metrics")


def test_doctor_reports_what_cannot_work(cli: Cli, env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    run = cli("doctor", "--no-call", env={**env, "KIMI_METRICS": "true"})  # over stdio nothing serves it
    assert run.returncode == 1
    assert ("problem", "metrics") in [(c[0], c[1]) for c in check_lines(run.stdout)]
    monkeypatch.setitem(sys.modules, "opentelemetry.sdk.trace", None)  # the SDK is not installed
    monkeypatch.setitem(sys.modules, "prometheus_client", None)
    run = cli("doctor", "--no-call", env={**env, "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318",
                                          "KIMI_METRICS": "true", "KIMI_TRANSPORT": "streamable-http"})
    assert run.returncode == 1
    problems = {c[1]: c[2] for c in check_lines(run.stdout) if c[0] == "problem"}
    assert "pip install 'kimi-mcp[otel]'" in problems["traces"]
    assert "prometheus-client is not installed" in problems["metrics"]
    assert "pip install 'kimi-mcp[metrics]'" in run.stdout


def test_serving_metrics_without_prometheus_client_is_one_line_naming_the_extra(
        cli: Cli, env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(telemetry, "_metrics", None)
    monkeypatch.setitem(sys.modules, "prometheus_client", None)
    run = cli("--transport", "streamable-http", "--port", "0", "--metrics", env=env)
    assert run.returncode == 2
    assert run.stderr.strip().splitlines() == [
        "kimi-mcp: KIMI_METRICS is on, but prometheus-client is not installed: pip install 'kimi-mcp[metrics]'"]
    assert not telemetry.metrics_enabled()
