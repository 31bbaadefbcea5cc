"""The reading rules of `files` and `images` (kimi_mcp/chat/attachments.py), one test per rule, on real
files under tmp_path; then how the chat layer puts them in the user turn, sends them and stores them.
"""

from __future__ import annotations

import base64
import json
import os
import sys
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest

from kimi_mcp.catalogue import CATALOGUE, Catalogue
from kimi_mcp.chat import ChatArgs, ChatService, Conversations, ReadScope
from kimi_mcp.chat.attachments import (
    MAX_FILE_BYTES,
    MAX_FILES,
    MAX_IMAGE_BYTES,
    MAX_IMAGES,
    image_type,
    needs_directory,
    operator_dirs,
    paths_from_file_uris,
    read_attachments,
)
from kimi_mcp.errors import InvalidArguments
from kimi_mcp.settings import Secret, Settings
from kimi_mcp.store import Limits, MemoryStore
from kimi_mcp.upstream import KimiClient, Message, RetryPolicy, Timeouts

pytestmark = pytest.mark.anyio

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\rIHDR" + bytes(range(64))
JPEG = b"\xff\xd8\xff\xe0" + b"\x00\x10JFIF" + bytes(64)
GIF = b"GIF89a" + bytes(32)
WEBP = b"RIFF" + (40).to_bytes(4, "little") + b"WEBPVP8 " + bytes(32)
posix_only = pytest.mark.skipif(sys.platform == "win32", reason="FIFOs, devices and symlinks as on POSIX")


def data_url(data: bytes, media: str = "image/png") -> str:
    return f"data:{media};base64,{base64.b64encode(data).decode()}"


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """The operator's directory, with a file in it; `tmp_path/outside` is next to it, not inside."""
    allowed = tmp_path / "allowed"
    (allowed / "src").mkdir(parents=True)
    (allowed / "src" / "app.py").write_text("print('hello')\n")
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "secret.txt").write_text("do not read me")
    return allowed


def scope(*dirs: Path, client: tuple[Path, ...] | None = None) -> ReadScope:
    return ReadScope(tuple(dirs), client)


async def refusal(files: list[str] | None = None, images: list[str] | None = None,
                  where: ReadScope | None = None) -> str:
    with pytest.raises(InvalidArguments) as raised:
        await read_attachments(files or [], images or [], where or ReadScope())
    return raised.value.message


# --------------------------------------------------------------------------- files that are read


async def test_a_text_file_becomes_a_block_naming_it(home: Path) -> None:
    got = await read_attachments(["src/app.py"], [], scope(home))
    assert got.text == "--- file: src/app.py (15 bytes) ---\nprint('hello')\n--- end of file: src/app.py ---"
    assert got.images == ()


async def test_an_absolute_path_inside_and_a_file_without_final_newline(home: Path) -> None:
    (home / "notes.md").write_text("é" * 1000)  # 2,000 bytes of UTF-8
    got = await read_attachments([str(home / "notes.md")], [], scope(home))
    assert got.text.startswith(f"--- file: {home / 'notes.md'} (2,000 bytes) ---\n{'é' * 1000}\n--- end of file:")


async def test_relative_paths_start_at_the_first_operator_directory(home: Path, tmp_path: Path) -> None:
    second = tmp_path / "second"
    second.mkdir()
    (second / "only-here.txt").write_text("x")
    assert "only-here.txt" in await refusal(["only-here.txt"], where=scope(home, second))  # not in the first
    got = await read_attachments([str(second / "only-here.txt")], [], scope(home, second))  # absolute: fine
    assert "(1 bytes)" in got.text


async def test_nothing_is_read_without_an_operator_directory(home: Path) -> None:
    message = await refusal([str(home / "src" / "app.py")])
    assert "'" + str(home / "src" / "app.py") + "'" in message
    assert "the operator has not allowed any directory" in message and "KIMI_ALLOWED_DIRS" in message


# --------------------------------------------------------------------------- where: outside, .., symlinks


async def test_dot_dot_is_refused_before_resolving_even_when_it_stays_inside(home: Path) -> None:
    message = await refusal(["src/../src/app.py"], where=scope(home))
    assert "'src/../src/app.py'" in message and "'..'" in message
    assert "'..'" in await refusal(["../outside/secret.txt"], where=scope(home))
    assert "'..'" in await refusal([str(home / ".." / "outside" / "secret.txt")], where=scope(home))


async def test_outside_is_one_message_whether_the_path_exists_or_not(home: Path, tmp_path: Path) -> None:
    existing = str(tmp_path / "outside" / "secret.txt")
    missing = str(tmp_path / "outside" / "nothing.txt")
    said_existing = await refusal([existing], where=scope(home))
    said_missing = await refusal([missing], where=scope(home))
    assert "outside the directories this call may read" in said_existing
    assert said_existing.replace(existing, "PATH") == said_missing.replace(missing, "PATH")
    assert "does not exist" not in said_missing


async def test_a_sibling_directory_sharing_the_prefix_is_outside(home: Path, tmp_path: Path) -> None:
    sibling = tmp_path / "allowed-not"
    sibling.mkdir()
    (sibling / "x.txt").write_text("x")
    assert "outside" in await refusal([str(sibling / "x.txt")], where=scope(home))


@posix_only
async def test_a_symlink_pointing_outside_is_outside(home: Path, tmp_path: Path) -> None:
    (home / "link.txt").symlink_to(tmp_path / "outside" / "secret.txt")
    (home / "linkdir").symlink_to(tmp_path / "outside")
    (home / "dangling.txt").symlink_to(tmp_path / "outside" / "gone.txt")
    for path in ("link.txt", "linkdir/secret.txt", "dangling.txt"):
        message = await refusal([path], where=scope(home))
        assert f"'{path}'" in message and "outside the directories" in message, message


@posix_only
async def test_a_symlink_inside_and_a_symlinked_allowed_directory_are_fine(home: Path, tmp_path: Path) -> None:
    (home / "alias.py").symlink_to(home / "src" / "app.py")
    (tmp_path / "home-link").symlink_to(home)
    assert "print('hello')" in (await read_attachments(["alias.py"], [], scope(home))).text
    got = await read_attachments([str(tmp_path / "home-link" / "src" / "app.py")], [], scope(tmp_path / "home-link"))
    assert "print('hello')" in got.text


async def test_urls_and_odd_paths_are_refused(home: Path) -> None:
    assert "is a URL" in await refusal(["https://example.com/a.py"], where=scope(home))
    assert "is a URL" in await refusal(images=["file:///etc/passwd"], where=scope(home))
    assert "empty path" in await refusal(["  "], where=scope(home))
    assert "NUL character" in await refusal(["a\x00b"], where=scope(home))


# --------------------------------------------------------------------------- where: the client's roots


async def test_the_client_s_roots_narrow_the_operator_s_set(home: Path, tmp_path: Path) -> None:
    (home / "other").mkdir()
    (home / "other" / "b.txt").write_text("b")
    narrowed = scope(home, client=(home / "src",))
    assert "print('hello')" in (await read_attachments(["app.py"], [], narrowed)).text  # relative: first root
    message = await refusal([str(home / "other" / "b.txt")], where=narrowed)
    assert "outside the directories" in message and "client's roots" in message
    # A client root outside the operator's set allows nothing there.
    (tmp_path / "outside" / "c.txt").write_text("c")
    assert "outside" in await refusal([str(tmp_path / "outside" / "c.txt")],
                                      where=scope(home, client=(tmp_path / "outside",)))
    assert "roots name no local directory" in await refusal(["src/app.py"], where=scope(home, client=()))


def test_file_uris_become_paths_and_other_roots_are_skipped(tmp_path: Path) -> None:
    found = paths_from_file_uris([(tmp_path / "a b").as_uri(), "file://localhost/srv/x", "https://example.com/",
                                  "file://elsewhere/share", (tmp_path / "100%41").as_uri()])
    assert found == (tmp_path / "a b", Path("/srv/x"), tmp_path / "100%41")  # unquoted once


def test_the_operator_s_set() -> None:
    assert operator_dirs(Settings(allowed_dirs=("/srv/a", "rel")), cwd="/ignored") == (
        Path("/srv/a"), Path(os.path.abspath("rel")))
    assert operator_dirs(Settings(transport="stdio"), cwd="/work/here") == (Path("/work/here"),)
    assert operator_dirs(Settings(transport="streamable-http"), cwd="/work/here") == ()
    assert operator_dirs(Settings(transport="sse")) == ()
    assert Settings.load({"KIMI_ALLOWED_DIRS": " /a, /b ,,/a"}).allowed_dirs == ("/a", "/b")


def test_data_urls_need_no_directory() -> None:
    assert not needs_directory(None, [data_url(PNG)])
    assert needs_directory(["a.py"], None) and needs_directory([], [data_url(PNG), "x.png"])


# --------------------------------------------------------------------------- what: not a readable text file


async def test_a_missing_file_inside(home: Path) -> None:
    message = await refusal(["src/nope.py"], where=scope(home))
    assert "'src/nope.py'" in message and "does not exist" in message
    assert "does not exist" in await refusal(["src/app.py/inner"], where=scope(home))  # a file as a directory


async def test_a_directory(home: Path) -> None:
    message = await refusal(["src"], where=scope(home))
    assert "'src'" in message and "is a directory" in message


@posix_only
async def test_a_fifo_is_refused_without_blocking(home: Path) -> None:
    os.mkfifo(home / "pipe")
    with anyio.fail_after(5):  # opening a FIFO for reading would block until a writer came
        message = await refusal(["pipe"], where=scope(home))
    assert "'pipe'" in message and "not a regular file" in message


@posix_only
async def test_a_device_is_refused() -> None:
    message = await refusal(["/dev/null"], where=scope(Path("/dev")))
    assert "'/dev/null'" in message and "not a regular file" in message
    assert "not a regular file" in await refusal(images=["null"], where=scope(Path("/dev")))


async def test_a_binary_file_offered_as_text(home: Path) -> None:
    (home / "blob.bin").write_bytes(b"text then \x00 a NUL")
    (home / "latin1.txt").write_bytes("café".encode("latin-1"))
    assert "binary (it contains NUL bytes)" in await refusal(["blob.bin"], where=scope(home))
    message = await refusal(["latin1.txt"], where=scope(home))
    assert "'latin1.txt'" in message and "not UTF-8 text" in message
    (home / "image.png").write_bytes(PNG)
    assert "binary" in await refusal(["image.png"], where=scope(home))


async def test_a_file_over_the_per_file_limit(home: Path) -> None:
    (home / "exact.txt").write_bytes(b"a" * MAX_FILE_BYTES)
    (home / "big.txt").write_bytes(b"a" * (MAX_FILE_BYTES + 1))
    assert len((await read_attachments(["exact.txt"], [], scope(home))).text) > MAX_FILE_BYTES
    message = await refusal(["big.txt"], where=scope(home))
    assert "'big.txt'" in message and "over the limit of 524,288 bytes per file" in message


async def test_too_many_files_and_the_total_budget(home: Path) -> None:
    message = await refusal(["src/app.py"] * (MAX_FILES + 1), where=scope(home))
    assert "21 files given, more than the 20" in message
    for name in "abc":
        (home / f"{name}.txt").write_bytes(b"z" * 400_000)
    assert (await read_attachments(["a.txt", "b.txt"], [], scope(home))).text.count("--- file:") == 2
    message = await refusal(["a.txt", "b.txt", "c.txt"], where=scope(home))
    assert "'c.txt'" in message and "1,200,000 bytes, over the budget of 1,048,576 bytes" in message


# --------------------------------------------------------------------------- images


async def test_images_are_detected_by_content_not_by_name(home: Path) -> None:
    (home / "shot.jpg").write_bytes(PNG)  # a PNG named .jpg
    (home / "photo.bin").write_bytes(JPEG)
    got = await read_attachments([], ["shot.jpg", "photo.bin", data_url(GIF, "image/gif"),
                                      data_url(WEBP, "image/png")], scope(home))
    assert [url.partition(";")[0] for url in got.images] == [
        "data:image/png", "data:image/jpeg", "data:image/gif", "data:image/webp"]  # the content decides
    assert base64.b64decode(got.images[0].partition(",")[2]) == PNG
    assert got.text.splitlines() == [
        f"[image: shot.jpg, image/png, {len(PNG):,} bytes]",
        f"[image: photo.bin, image/jpeg, {len(JPEG):,} bytes]",
        f"[image: images[2], image/gif, {len(GIF):,} bytes]",
        f"[image: images[3], image/webp, {len(WEBP):,} bytes]",
    ]
    assert image_type(b"RIFF\x00\x00\x00\x00WAVE") is None


async def test_a_file_that_is_not_an_image(home: Path) -> None:
    (home / "fake.png").write_text("not really a png")
    message = await refusal(images=["fake.png"], where=scope(home))
    assert "'fake.png'" in message and "not a PNG, JPEG, WebP or GIF image" in message
    assert "not a PNG" in await refusal(images=[data_url(b"plain text", "image/png")])


async def test_images_with_no_directory_only_as_data_urls(home: Path) -> None:
    got = await read_attachments([], [data_url(PNG)], ReadScope())
    assert got.images == (data_url(PNG),)
    assert "KIMI_ALLOWED_DIRS" in await refusal(images=[data_url(PNG), "shot.png"])


@pytest.mark.parametrize(("url", "said"), [
    ("data:image/svg+xml;base64,PHN2Zz4=", "'image/svg+xml' is not an image type accepted"),
    ("data:text/plain;base64,aGk=", "'text/plain' is not an image type accepted"),
    ("data:image/png,rawbytes", "must be base64"),
    ("data:image/png;base64", "no comma"),
    ("data:image/png;base64,@@@not-base64@@@", "not valid base64"),
    ("data:image/png;base64,iVBORw0KGgo", "not valid base64"),  # bad padding
])
async def test_a_bad_data_url(url: str, said: str) -> None:
    message = await refusal(images=[url])
    assert "images[0] (a data: URL)" in message and said in message


async def test_data_urls_tolerate_line_breaks_in_the_base64() -> None:
    encoded = base64.encodebytes(PNG).decode()  # with newlines every 76 characters
    assert (await read_attachments([], [f"data:image/png;base64,{encoded}"], ReadScope())).images == (data_url(PNG),)


async def test_image_limits(home: Path) -> None:
    assert "9 images given, more than the 8" in await refusal(images=[data_url(PNG)] * (MAX_IMAGES + 1))
    big = PNG + bytes(MAX_IMAGE_BYTES + 1 - len(PNG))
    (home / "big.png").write_bytes(big)
    message = await refusal(images=["big.png"], where=scope(home))
    assert "'big.png'" in message and "over the limit of 4,194,304 bytes per image" in message
    assert "over the limit of 4,194,304 bytes per image" in await refusal(images=[data_url(big)])
    part = PNG + bytes(3_500_000 - len(PNG))
    for name in "abcd":
        (home / f"{name}.png").write_bytes(part)
    assert len((await read_attachments([], ["a.png", "b.png", "c.png"], scope(home))).images) == 3
    message = await refusal(images=["a.png", "b.png", "c.png", "d.png"], where=scope(home))
    assert "'d.png'" in message and "14,000,000 bytes, over the budget of 12,582,912 bytes" in message


# --------------------------------------------------------------------------- into the user turn, upstream, the store


class Upstream:
    """A MockTransport handler that records bodies and answers one plain completion."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []

    async def __call__(self, request: httpx2.Request) -> httpx2.Response:
        self.bodies.append(json.loads(request.content))
        return httpx2.Response(200, json={
            "id": "c", "model": "", "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "seen"}, "finish_reason": "stop"}]})


def service(upstream: Upstream) -> ChatService:
    http = httpx2.AsyncClient(transport=httpx2.MockTransport(upstream))
    client = KimiClient(http, base_url="http://ace.test", token=Secret("unit-token-0123456789"),
                        timeouts=Timeouts(connect=1.0, first_byte=5.0, idle=5.0, overall=10.0),
                        retry=RetryPolicy(max_retries=0), max_concurrency=4)
    return ChatService(client, Catalogue(CATALOGUE), "kimi-k3")


async def test_the_prompt_s_turn_carries_the_files_and_images(home: Path) -> None:
    (home / "shot.png").write_bytes(PNG)
    svc = service(Upstream())
    args = await svc.attach(ChatArgs(prompt="Review this", messages=(Message("user", "earlier"),),
                                     files=("src/app.py",), images=("shot.png",), read_scope=scope(home)))
    request = svc.prepare(args)
    earlier, turn = request.messages
    assert earlier == Message("user", "earlier")
    assert turn.content == ("Review this\n\n--- file: src/app.py (15 bytes) ---\nprint('hello')\n"
                            f"--- end of file: src/app.py ---\n\n[image: shot.png, image/png, {len(PNG):,} bytes]")
    assert turn.to_wire() == {"role": "user", "content": [
        {"type": "text", "text": turn.content}, {"type": "image_url", "image_url": {"url": data_url(PNG)}}]}
    assert earlier.to_wire() == {"role": "user", "content": "earlier"}  # no images: a plain string, as before


async def test_without_a_prompt_the_last_user_message_gets_them(home: Path) -> None:
    svc = service(Upstream())
    args = await svc.attach(ChatArgs(messages=(Message("user", "first"), Message("assistant", "a"),
                                               Message("user", "look")), files=("src/app.py",),
                                     read_scope=scope(home)))
    contents = [m.content for m in svc.prepare(args).messages]
    assert contents[:2] == ["first", "a"] and contents[2].startswith("look\n\n--- file: src/app.py")


async def test_a_text_only_model_refuses_images_naming_the_models_that_take_them() -> None:
    svc = service(Upstream())
    with pytest.raises(InvalidArguments) as raised:
        await svc.attach(ChatArgs(prompt="what is this?", model="kimi-k2-thinking", images=(data_url(PNG),)))
    message = raised.value.message
    assert "kimi-k2-thinking reads text only" in message and "kimi-k3" in message and "kimi-k2.6" in message
    assert "kimi-k2-thinking," not in message.partition("take images:")[2]
    # Files are text: every model takes them.
    with pytest.raises(InvalidArguments, match="reads text only"):
        svc.prepare(ChatArgs(prompt="x", model="kimi-k2-thinking", images=(data_url(PNG),)))


async def test_a_conversation_stores_the_text_and_a_reference_not_the_image(home: Path) -> None:
    (home / "shot.png").write_bytes(PNG)
    upstream = Upstream()
    conversations = Conversations(service(upstream), MemoryStore(), Limits(), ttl_s=0)
    await conversations.run("me", "c", ChatArgs(prompt="Q1", files=("src/app.py",), images=("shot.png",),
                                                read_scope=scope(home)), continuing=False, listener=None)
    sent = upstream.bodies[-1]["messages"][-1]["content"]
    assert sent[1] == {"type": "image_url", "image_url": {"url": data_url(PNG)}}
    stored = await conversations.get("me", "c")
    assert stored is not None
    assert stored.turns[0].content == sent[0]["text"]
    assert "print('hello')" in stored.turns[0].content and "[image: shot.png, image/png" in stored.turns[0].content
    assert "base64" not in stored.turns[0].content
    await conversations.run("me", "c", ChatArgs(prompt="Q2"), continuing=True, listener=None)
    history = upstream.bodies[-1]["messages"]
    assert history[0]["content"] == sent[0]["text"]  # the reference text, not the image again
    assert all(isinstance(m["content"], str) for m in history)


async def test_the_conversation_cap_counts_the_files(home: Path) -> None:
    (home / "big.txt").write_text("x" * 5_000)
    upstream = Upstream()
    conversations = Conversations(service(upstream), MemoryStore(), Limits(max_bytes=4_000), ttl_s=0)
    with pytest.raises(InvalidArguments, match="KIMI_MAX_CONVERSATION_BYTES"):
        await conversations.run("me", "c", ChatArgs(prompt="short", files=("big.txt",), read_scope=scope(home)),
                                continuing=False, listener=None)
    assert upstream.bodies == []  # refused before Kimi was asked
