"""`files` and `images` through real MCP clients, against the loopback fake: in memory (both eras),
over stdio (the working directory is the default allowed directory) and over Streamable HTTP
(nothing is allowed unless KIMI_ALLOWED_DIRS says so). Each test checks what the host's model gets
back AND what the fake received: the file text in the user turn, the image as a content part.
Every file lives under tmp_path.
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client
from mcp.client.context import ClientRequestContext
from mcp_types import ErrorData, ListRootsResult, Root
from pydantic import FileUrl

from kimi_mcp.server import roots as server_roots
from tests.mcp.helpers import error_of, ok, only_request
from tests.support.fake_ace import FakeAce
from tests.support.fake_parts import image_parts, text_parts, user_contents
from tests.support.harness import connect

pytestmark = pytest.mark.anyio

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\rIHDR" + bytes(range(40))
VISION = "kimi-k3"
CODE = "def add(a, b):\n    return a + b\n"
RootsCallback = Callable[[ClientRequestContext], Awaitable[ListRootsResult | ErrorData]]


def data_url(data: bytes) -> str:
    return f"data:image/png;base64,{base64.b64encode(data).decode()}"


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The directory the module's in-memory servers allow: code, a screenshot, a sub-project."""
    root = tmp_path_factory.mktemp("workspace")
    (root / "src").mkdir()
    (root / "src" / "app.py").write_text(CODE)
    (root / "shot.png").write_bytes(PNG)
    (root / "sub").mkdir()
    (root / "sub" / "notes.md").write_text("sub-project notes\n")
    (root / "sub" / "pic.png").write_bytes(PNG)
    outside = root.parent / "elsewhere"  # next to the workspace, not inside it
    outside.mkdir()
    (outside / "secret.txt").write_text("never sent")
    return root


@pytest.fixture(scope="module")
async def client(fake: FakeAce, workspace: Path) -> AsyncIterator[Client]:
    async with connect("memory", fake, env={"KIMI_ALLOWED_DIRS": str(workspace), "KIMI_MAX_RETRIES": "0"}) as c:
        yield c


def last_user(fake: FakeAce) -> Any:
    """The content of the last user turn of the one request the fake got."""
    return user_contents(only_request(fake))[-1]


class Roots:
    """A client's roots/list answer, counting how often it was asked."""

    def __init__(self, *directories: Path, delay: float = 0.0) -> None:
        self.result = ListRootsResult(roots=[Root(uri=FileUrl(d.as_uri()), name=d.name) for d in directories])
        self.delay = delay
        self.asked = 0

    async def __call__(self, context: ClientRequestContext) -> ListRootsResult | ErrorData:
        self.asked += 1
        await anyio.sleep(self.delay)
        return self.result


# --------------------------------------------------------------------------- in memory


async def test_files_and_images_reach_kimi_as_text_and_content_parts(client: Client, fake: FakeAce,
                                                                     workspace: Path) -> None:
    result = await client.call_tool("kimi_chat", {
        "prompt": "Review this code and the screenshot.", "model": VISION,
        "files": ["src/app.py"], "images": ["shot.png", data_url(PNG[:30] + b"other")]})
    assert ok(result)["text"]
    content = last_user(fake)
    assert isinstance(content, list) and [p["type"] for p in content] == ["text", "image_url", "image_url"]
    sent = text_parts(content)
    assert sent.startswith("Review this code and the screenshot.\n\n--- file: src/app.py (32 bytes) ---\n" + CODE)
    assert f"[image: shot.png, image/png, {len(PNG):,} bytes]" in sent
    assert "[image: images[1], image/png, 35 bytes]" in sent
    assert image_parts(content) == [PNG, PNG[:30] + b"other"]
    # The stored conversation keeps the text and a reference, never the image.
    transcript = await client.call_tool("kimi_read_conversation", {"conversation_id": ok(result)["conversation_id"]})
    stored = ok(transcript)["turns"][0]["content"]
    assert stored == sent and "base64" not in stored


async def test_kimi_json_reads_files_too(client: Client, fake: FakeAce) -> None:
    result = await client.call_tool("kimi_json", {"prompt": "Name the function.", "files": ["src/app.py"]})
    assert "value" in ok(result)
    content = last_user(fake)
    assert isinstance(content, str)  # no images: a plain string, as before
    assert content.startswith("Name the function.\n\n--- file: src/app.py (32 bytes) ---\ndef add(a, b):")


async def test_a_text_only_model_refuses_images(client: Client, fake: FakeAce) -> None:
    result = await client.call_tool("kimi_chat", {"prompt": "What is this?", "model": "kimi-k2-thinking",
                                                  "images": ["shot.png"]})
    error = error_of(result)
    assert error["kind"] == "invalid_arguments"
    assert "kimi-k2-thinking reads text only" in error["message"] and VISION in error["message"]
    assert fake.requests == []
    json_result = await client.call_tool("kimi_json", {"prompt": "x", "model": "kimi-k2-thinking",
                                                       "images": [data_url(PNG)]})
    assert "reads text only" in error_of(json_result)["message"]


async def test_refusals_name_the_path_and_the_rule_and_send_nothing(client: Client, fake: FakeAce,
                                                                    workspace: Path) -> None:
    secret = str(workspace.parent / "elsewhere" / "secret.txt")
    cases = {
        "../elsewhere/secret.txt": "'..' path component",
        secret: "outside the directories this call may read",
        "src": "is a directory",
        "src/missing.py": "does not exist",
        "shot.png": "binary",
    }
    for path, rule in cases.items():
        error = error_of(await client.call_tool("kimi_chat", {"prompt": "read", "files": [path]}))
        assert error["kind"] == "invalid_arguments" and repr(path) in error["message"] and rule in error["message"]
    error = error_of(await client.call_tool("kimi_chat", {"prompt": "see", "model": VISION,
                                                          "images": ["src/app.py"]}))
    assert "not a PNG, JPEG, WebP or GIF image" in error["message"]
    error = error_of(await client.call_tool("kimi_chat", {"prompt": "see", "model": VISION,
                                                          "images": ["data:image/png;base64,%%%"]}))
    assert "images[0] (a data: URL)" in error["message"] and "not valid base64" in error["message"]
    assert fake.requests == []


async def test_a_client_s_roots_restrict_reading_to_them(fake: FakeAce, workspace: Path) -> None:
    roots = Roots(workspace / "sub")
    async with connect("memory", fake, env={"KIMI_ALLOWED_DIRS": str(workspace)}, list_roots=roots) as c:
        result = await c.call_tool("kimi_chat", {"prompt": "p", "model": VISION, "files": ["notes.md"],
                                                 "images": ["pic.png"]})
        assert ok(result)
        assert roots.asked == 1
        content = last_user(fake)
        assert "--- file: notes.md (18 bytes) ---\nsub-project notes\n" in text_parts(content)  # relative: the root
        assert image_parts(content) == [PNG]
        fake.reset()
        refused = error_of(await c.call_tool("kimi_chat", {"prompt": "p", "files": [str(workspace / "src/app.py")]}))
        assert "client's roots" in refused["message"] and "outside" in refused["message"]
        assert fake.requests == []
        # No local path: the roots are not asked for at all.
        assert ok(await c.call_tool("kimi_chat", {"prompt": "p", "model": VISION, "images": [data_url(PNG)]}))
        assert roots.asked == 2


async def test_a_client_root_outside_the_operator_s_set_allows_nothing_there(fake: FakeAce, workspace: Path) -> None:
    outside = workspace.parent / "elsewhere"
    async with connect("memory", fake, env={"KIMI_ALLOWED_DIRS": str(workspace)}, list_roots=Roots(outside)) as c:
        error = error_of(await c.call_tool("kimi_chat", {"prompt": "p", "files": [str(outside / "secret.txt")]}))
        assert "outside the directories" in error["message"]
    assert fake.requests == []


async def test_a_legacy_client_s_roots_are_asked_over_the_session(fake: FakeAce, workspace: Path) -> None:
    roots = Roots(workspace / "sub")
    async with connect("memory", fake, era="legacy", env={"KIMI_ALLOWED_DIRS": str(workspace)},
                       list_roots=roots) as c:
        assert ok(await c.call_tool("kimi_chat", {"prompt": "p", "files": ["notes.md"]}))
        assert roots.asked == 1 and "sub-project notes" in text_parts(last_user(fake))
        fake.reset()
        error = error_of(await c.call_tool("kimi_chat", {"prompt": "p", "files": [str(workspace / "src/app.py")]}))
        assert "client's roots" in error["message"]


async def test_a_client_that_does_not_answer_roots_list_gets_an_error_saying_so(
        fake: FakeAce, workspace: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(server_roots, "ROOTS_TIMEOUT_S", 0.5)
    silent = Roots(workspace, delay=60)
    async with connect("memory", fake, era="legacy", env={"KIMI_ALLOWED_DIRS": str(workspace)},
                       list_roots=silent) as c:
        with anyio.fail_after(10):
            error = error_of(await c.call_tool("kimi_chat", {"prompt": "p", "files": ["src/app.py"]}))
        assert error["kind"] == "invalid_arguments"
        assert "did not answer roots/list within 0.5 s" in error["message"]
        assert fake.requests == []
        assert ok(await c.call_tool("kimi_chat", {"prompt": "still there?"}))  # the session still works


# --------------------------------------------------------------------------- over stdio and Streamable HTTP


async def test_over_stdio_the_working_directory_is_allowed(fake: FakeAce, tmp_path: Path) -> None:
    (tmp_path / "here.txt").write_text("from the working directory\n")
    (tmp_path / "shot.png").write_bytes(PNG)
    async with connect("stdio", fake, cwd=tmp_path) as c:
        result = await c.call_tool("kimi_chat", {"prompt": "p", "model": VISION, "files": ["here.txt"],
                                                 "images": ["shot.png"]})
        assert ok(result)
        content = last_user(fake)
        assert "--- file: here.txt (27 bytes) ---\nfrom the working directory\n" in text_parts(content)
        assert image_parts(content) == [PNG]
        fake.reset()
        error = error_of(await c.call_tool("kimi_chat", {"prompt": "p", "files": ["/etc/hostname"]}))
        assert "outside the directories" in error["message"]
        assert fake.requests == []


async def test_over_http_files_need_kimi_allowed_dirs(fake: FakeAce, tmp_path: Path) -> None:
    (tmp_path / "doc.txt").write_text("served over HTTP\n")
    async with connect("http", fake) as c:
        error = error_of(await c.call_tool("kimi_chat", {"prompt": "p", "files": [str(tmp_path / "doc.txt")]}))
        assert "the operator has not allowed any directory" in error["message"]
        assert "KIMI_ALLOWED_DIRS" in error["message"]
        assert fake.requests == []
        assert ok(await c.call_tool("kimi_chat", {"prompt": "p", "model": VISION, "images": [data_url(PNG)]}))
        assert image_parts(last_user(fake)) == [PNG]  # a data: URL needs no directory
    fake.reset()
    roots = Roots(tmp_path)  # a 2026-07-28 client: asked in an input-required round of the same call
    async with connect("http", fake, env={"KIMI_ALLOWED_DIRS": str(tmp_path)}, list_roots=roots) as c:
        assert ok(await c.call_tool("kimi_chat", {"prompt": "p", "files": ["doc.txt"]}))
        assert "--- file: doc.txt (17 bytes) ---\nserved over HTTP\n" in text_parts(last_user(fake))
        assert roots.asked == 1


async def test_over_http_a_legacy_client_s_roots_ride_the_request_stream(fake: FakeAce, tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "in.txt").write_text("in the root\n")
    (tmp_path / "out.txt").write_text("not in the root\n")
    roots = Roots(tmp_path / "a")
    async with connect("http", fake, era="legacy", env={"KIMI_ALLOWED_DIRS": str(tmp_path)}, list_roots=roots) as c:
        assert ok(await c.call_tool("kimi_chat", {"prompt": "p", "files": ["in.txt"]}))
        assert "in the root" in text_parts(last_user(fake)) and roots.asked == 1
        fake.reset()
        error = error_of(await c.call_tool("kimi_chat", {"prompt": "p", "files": [str(tmp_path / "out.txt")]}))
        assert "client's roots" in error["message"]
