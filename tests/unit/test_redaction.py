"""`kimi_mcp.redaction`: the logging filter masks secrets in messages, arguments and tracebacks, and
`redact_value` masks them inside nested values."""

from __future__ import annotations

import io
import logging

from kimi_mcp.redaction import MASK, SHORT, RedactingFilter, redact, redact_value

TOKEN = "sk-ace-UNIT-TEST-token-9f8e7d6c5b4a"


class TestRedaction:
    def test_filter_masks_message_args_and_exception(self) -> None:
        stream = io.StringIO()
        handler = logging.StreamHandler(stream)
        handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
        handler.addFilter(RedactingFilter((TOKEN, "")))
        logger = logging.getLogger("kimi_mcp.tests.redaction")
        logger.propagate = False
        logger.setLevel(logging.DEBUG)
        logger.addHandler(handler)
        try:
            logger.info("header Bearer " + TOKEN)
            logger.warning("token is %s and %r", TOKEN, {"auth": TOKEN})
            try:
                raise RuntimeError(f"request failed with Authorization: Bearer {TOKEN}")
            except RuntimeError:
                logger.exception("call failed for %s", TOKEN)
            logger.info("stack", stack_info=True, extra={})
        finally:
            logger.removeHandler(handler)
        out = stream.getvalue()
        assert TOKEN not in out
        assert out.count(MASK) >= 5
        assert "RuntimeError: request failed with Authorization: Bearer ****" in out
        assert "Traceback" in out

    def test_filter_without_secrets_leaves_records(self) -> None:
        record = logging.LogRecord("x", logging.INFO, __file__, 1, "a %s", ("b",), None)
        assert RedactingFilter(("",)).filter(record)
        assert record.getMessage() == "a b"

    def test_redact_value(self) -> None:
        value = {"a": [TOKEN, {"b": f"x{TOKEN}y"}], "n": 1, "none": None}
        assert redact_value(value, (TOKEN,)) == {"a": [MASK, {"b": f"x{MASK}y"}], "n": 1, "none": None}

    def test_short_strings_remembered_and_long_ones_alike_are_masked(self) -> None:
        """Short strings are redacted once and remembered: the second time, and with other secrets,
        the answer is still right (the secrets are part of what is remembered)."""
        short, long = f"id {TOKEN[3:15]}", "x" * SHORT + TOKEN[-12:]
        for _ in range(2):
            assert redact(short, (TOKEN,)) == f"id {MASK}"
            assert redact(long, (TOKEN,)) == "x" * SHORT + MASK
        assert redact(short, ("another-secret-entirely",)) == short
        assert redact(short, ()) == short


def test_debug_logging_keeps_transport_loggers_quiet() -> None:
    """At DEBUG the SSE transport would log whole prompts and answers: it stays at WARNING."""
    import logging

    from kimi_mcp.redaction import setup_logging

    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        setup_logging("DEBUG", ())
        for name in ("mcp.server.sse", "sse_starlette", "httpx2", "httpcore2"):
            assert logging.getLogger(name).getEffectiveLevel() >= logging.WARNING, name
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
