"""What a tool call must not pay for again and again (measured in docs/benchmarks.md; these tests
check the mechanism, never a time)."""

from __future__ import annotations

import gc
import weakref
from typing import Any

from mcp.server.elicitation import AcceptedElicitation

import kimi_mcp.server.roots  # noqa: F401  (what keeps the class alive)


def test_the_resolvers_generic_outcome_class_survives_garbage_collection() -> None:
    """The SDK wraps every resolver's value (our `roots` parameter) in `AcceptedElicitation[Any]`,
    which pydantic caches only weakly: once collected, the next call builds the class again (~5 ms)."""
    ref = weakref.ref(AcceptedElicitation[Any])
    gc.collect()
    assert ref() is not None
    assert AcceptedElicitation[Any] is ref()
