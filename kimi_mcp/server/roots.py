"""Where a call's `files` and `images` may be read: the operator's directories, narrowed to the
client's roots when the client declared the roots capability.

The roots are asked for only then, and only when the call names a local path (a data: URL needs no
directory). `client_roots` is an SDK resolver (`Resolve`): on 2026-07-28 connections the SDK asks
the client in an input-required round; on legacy (2025-11-25) sessions it is asked here, over the
session, and a client that does not answer within `ROOTS_TIMEOUT_S` gets an error saying so. The
chat layer receives plain paths (`ReadScope`), never SDK objects.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

import anyio
from mcp.server.elicitation import AcceptedElicitation
from mcp.server.mcpserver.resolve import ListRoots, Resolve
from mcp.shared.exceptions import MCPError
from mcp.shared.message import ServerMessageMetadata
from mcp_types import REQUEST_TIMEOUT, ListRootsRequest, ListRootsResult
from mcp_types.version import is_version_at_least

from ..chat import ReadScope
from ..chat.attachments import needs_directory, paths_from_file_uris
from ..errors import InvalidArguments
from .context import Ctx

__all__ = ["ROOTS_TIMEOUT_S", "ClientRoots", "client_roots", "read_scope"]

ROOTS_TIMEOUT_S = 5.0
"""How long a legacy client may take to answer roots/list."""
INPUT_REQUIRED_VERSION = "2026-07-28"
"""From this protocol version on, the SDK asks the client inside the call's own rounds."""
_INLINE = "pass the text in prompt instead"
_OUTCOME = AcceptedElicitation[Any]
"""Held on purpose: the SDK wraps every resolver's value in this class, which pydantic caches only
weakly, so without a reference it is collected and built again (~5 ms) every few calls."""


def declares_roots(ctx: Ctx) -> bool:
    capabilities = ctx.client_capabilities
    return capabilities is not None and capabilities.roots is not None


async def client_roots(
    ctx: Ctx, files: Sequence[str] | None, images: Sequence[str] | None
) -> ListRootsResult | ListRoots | None:
    """The client's roots when this call needs them (None: the client declared no roots, or the
    call reads no local path)."""
    if not needs_directory(files, images) or not declares_roots(ctx):
        return None
    version = ctx.protocol_version
    if version is not None and is_version_at_least(version, INPUT_REQUIRED_VERSION):
        return ListRoots()  # the SDK asks in an input-required round and injects the answer
    return await _ask(ctx)


async def _ask(ctx: Ctx) -> ListRootsResult:
    """roots/list over a legacy session, within ROOTS_TIMEOUT_S."""
    if not ctx.session.can_send_request:
        raise InvalidArguments(
            "the client declared the roots capability, but this connection cannot carry the server's "
            f"roots/list request, so the directories it allows are unknown; {_INLINE}")
    late = InvalidArguments(
        f"the client declared the roots capability but did not answer roots/list within {ROOTS_TIMEOUT_S:g} s, "
        f"so the directories it allows are unknown; retry, or {_INLINE}")
    try:
        with anyio.fail_after(ROOTS_TIMEOUT_S + 1):
            result: ListRootsResult = await ctx.session.send_request(
                ListRootsRequest(), ListRootsResult, request_read_timeout_seconds=ROOTS_TIMEOUT_S,
                metadata=ServerMessageMetadata(related_request_id=ctx.request_id),
            )
            return result
    except TimeoutError:
        raise late from None
    except MCPError as exc:
        if exc.error.code == REQUEST_TIMEOUT:
            raise late from None
        raise InvalidArguments(
            f"the client declared the roots capability but answered roots/list with an error "
            f"({exc.error.message[:200]}), so the directories it allows are unknown; {_INLINE}") from None


ClientRoots = Annotated[ListRootsResult | None, Resolve(client_roots)]
"""A tool parameter the SDK fills with `client_roots` (not an argument the caller sees)."""


def read_scope(operator: tuple[Path, ...], roots: ListRootsResult | None) -> ReadScope:
    """The chat layer's view: the operator's directories, and the client's roots as local paths."""
    client = None if roots is None else paths_from_file_uris(str(root.uri) for root in roots.roots)
    return ReadScope(operator, client)
