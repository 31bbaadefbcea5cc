"""Local files and images a call attaches (`files`, `images` of kimi_chat and kimi_json): where the
server may read, and how. No MCP: the server layer hands over where the client allows reading as
plain paths.

Where: inside one of the operator's directories (`operator_dirs`: KIMI_ALLOWED_DIRS, else over stdio
the working directory, else nothing) AND, when the client declared the roots capability, inside one
of the client's roots. Relative paths start at the first root (the client's, else the operator's).
A `..` component is refused before anything is resolved; symlinks are resolved before the check, so
one that points outside is outside. Outside is one message whether the path exists or not.

How: a regular file only (never a directory, device, FIFO or socket: `os.stat` first, then opened
with O_NOFOLLOW | O_NONBLOCK, checked again and read at most limit + 1 bytes), text as UTF-8 without
NUL bytes, an image by its content (PNG, JPEG, WebP, GIF magic bytes, whatever the name says), all
within the limits below, in a worker thread. Every refusal is an `InvalidArguments` naming the path
as the caller gave it and the rule it broke.

What the user turn gets: each file as a block `--- file: NAME (N bytes) ---` ... `--- end of file:
NAME ---`, and each image as a line `[image: NAME, TYPE, N bytes]` (what a stored conversation
keeps) plus the image itself as a data URL (sent, never stored).
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import stat
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit
from urllib.request import url2pathname

import anyio.to_thread

from ..errors import InvalidArguments
from ..settings import Settings

__all__ = [
    "EMPTY",
    "IMAGE_TYPES",
    "MAX_FILES",
    "MAX_FILES_TOTAL",
    "MAX_FILE_BYTES",
    "MAX_IMAGES",
    "MAX_IMAGES_TOTAL",
    "MAX_IMAGE_BYTES",
    "Attachments",
    "ReadScope",
    "image_type",
    "needs_directory",
    "operator_dirs",
    "paths_from_file_uris",
    "read_attachments",
]

MAX_FILES = 20
MAX_FILE_BYTES = 512 * 1024
MAX_FILES_TOTAL = 1024 * 1024
MAX_IMAGES = 8
MAX_IMAGE_BYTES = 4 * 1024 * 1024
MAX_IMAGES_TOTAL = 12 * 1024 * 1024
IMAGE_TYPES = ("image/png", "image/jpeg", "image/webp", "image/gif")
READ_CHUNK = 64 * 1024
OPEN_FLAGS = (os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
              | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0))
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]+://")
_SEPARATORS = re.compile(r"[\\/]")
_WHITESPACE = re.compile(r"\s+")
NO_DIRECTORY = ("the operator has not allowed any directory for files and images (KIMI_ALLOWED_DIRS; over "
                "stdio the default is the server's working directory, over HTTP nothing)")


@dataclass(frozen=True, slots=True)
class ReadScope:
    """Where one call may read: inside one of `operator` and, when the client declared the roots
    capability (`client` is not None), inside one of `client` too."""

    operator: tuple[Path, ...] = ()
    client: tuple[Path, ...] | None = None


@dataclass(frozen=True, slots=True)
class Attachments:
    """What the files and images add to the user turn: `text` (file blocks, image references) and
    the images as data URLs, in the order given."""

    text: str = ""
    images: tuple[str, ...] = field(default=(), repr=False)


EMPTY = Attachments()


def operator_dirs(settings: Settings, cwd: str | None = None) -> tuple[Path, ...]:
    """The operator's directories: KIMI_ALLOWED_DIRS when set, else over stdio the working
    directory, else (HTTP transports) none."""
    if settings.allowed_dirs:
        return tuple(Path(os.path.abspath(os.path.expanduser(d))) for d in settings.allowed_dirs)
    if settings.transport == "stdio":
        return (Path(cwd or os.getcwd()),)
    return ()


def paths_from_file_uris(uris: Iterable[str]) -> tuple[Path, ...]:
    """The local directories a client's roots name (`file://` URIs on this host; others are skipped)."""
    found: list[Path] = []
    for uri in uris:
        parts = urlsplit(uri)
        if parts.scheme.lower() != "file" or parts.netloc not in ("", "localhost") or not parts.path:
            continue
        found.append(Path(os.path.abspath(url2pathname(parts.path))))  # url2pathname unquotes
    return tuple(found)


def is_data_url(value: str) -> bool:
    return value[:5].lower() == "data:"


def needs_directory(files: Sequence[str] | None, images: Sequence[str] | None) -> bool:
    """Whether a call names any local path (a data: URL needs no directory)."""
    return bool(files) or any(not is_data_url(image) for image in images or ())


def image_type(data: bytes) -> str | None:
    """The image's media type by its magic bytes: PNG, JPEG, WebP or GIF; None for anything else."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data.startswith((b"GIF87a", b"GIF89a")):
        return "image/gif"
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return None


async def read_attachments(files: Sequence[str], images: Sequence[str], scope: ReadScope) -> Attachments:
    """Read the files and images by the rules above, off the event loop."""
    if not files and not images:
        return EMPTY
    if len(files) > MAX_FILES:
        raise InvalidArguments(f"files: {len(files)} files given, more than the {MAX_FILES} one call may attach")
    if len(images) > MAX_IMAGES:
        raise InvalidArguments(f"images: {len(images)} images given, more than the {MAX_IMAGES} one call may attach")
    return await anyio.to_thread.run_sync(_read_all, tuple(files), tuple(images), scope)


# --------------------------------------------------------------------------- in the worker thread


def _shown(raw: str) -> str:
    """The caller's path for a message or a header: quoted, control characters escaped."""
    return repr(raw) if len(raw) <= 300 else repr(raw[:300] + "…")


def _plain(raw: str) -> str:
    """The caller's path inside the user turn: one line, control characters escaped."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in raw)


@dataclass(frozen=True, slots=True)
class _Allowed:
    """The scope with every directory resolved (symlinks too), as the checks need it."""

    operator: tuple[str, ...]
    client: tuple[str, ...] | None

    @classmethod
    def of(cls, scope: ReadScope) -> _Allowed:
        client = None if scope.client is None else tuple(os.path.realpath(p) for p in scope.client)
        return cls(tuple(os.path.realpath(p) for p in scope.operator), client)

    @property
    def base(self) -> str:
        return (self.client or self.operator)[0]

    def contains(self, real: str) -> bool:
        inside_operator = any(_inside(real, d) for d in self.operator)
        return inside_operator and (self.client is None or any(_inside(real, d) for d in self.client))

    def describe(self) -> str:
        text = f"inside {', '.join(self.operator)}"
        if self.client is not None:
            text += f" and inside one of the client's roots ({', '.join(self.client)})"
        return text


def _inside(path: str, directory: str) -> bool:
    try:
        return os.path.commonpath([path, directory]) == directory
    except ValueError:  # different drives (Windows)
        return False


def _locate(raw: str, what: str, allowed: _Allowed) -> str:
    """The real path the caller's `raw` names, or the refusal saying which rule it breaks."""
    name = f"{what} {_shown(raw)}"
    if not raw.strip():
        raise InvalidArguments(f"{what}: an empty path")
    if "\x00" in raw:
        raise InvalidArguments(f"{name}: a path may not contain a NUL character")
    if _URL.match(raw):
        raise InvalidArguments(f"{name} is a URL: give a local path (images also take data: URLs); "
                               "the server fetches nothing")
    if ".." in _SEPARATORS.split(raw):
        raise InvalidArguments(f"{name}: a '..' path component is not allowed")
    if not allowed.operator:
        raise InvalidArguments(f"cannot read {name}: {NO_DIRECTORY}")
    if allowed.client is not None and not allowed.client:
        raise InvalidArguments(f"cannot read {name}: the client's roots name no local directory")
    real = os.path.realpath(os.path.join(allowed.base, raw))
    if not allowed.contains(real):
        raise InvalidArguments(f"cannot read {name}: it is outside the directories this call may read "
                               f"({allowed.describe()}; relative paths start at {allowed.base})")
    return real


def _refuse(name: str, rule: str) -> InvalidArguments:
    return InvalidArguments(f"cannot read {name}: {rule}")


def _read_regular(raw: str, real: str, what: str, limit: int, kind: str) -> bytes:
    """A regular file's bytes, at most `limit`: stat before opening (a FIFO is never opened), open
    without following a symlink and without blocking, stat again, read at most limit + 1 bytes."""
    name = f"{what} {_shown(raw)}"
    try:
        info = os.stat(real)
    except (FileNotFoundError, NotADirectoryError):
        raise _refuse(name, "it does not exist") from None
    except PermissionError:
        raise _refuse(name, "permission denied") from None
    except OSError as exc:
        raise _refuse(name, exc.strerror or "it cannot be read") from None
    if stat.S_ISDIR(info.st_mode):
        raise _refuse(name, "it is a directory (name the files inside it)")
    if not stat.S_ISREG(info.st_mode):
        raise _refuse(name, "it is not a regular file (a device, FIFO or socket)")
    too_big = _refuse(name, f"it is over the limit of {limit:,} bytes per {kind}")
    if info.st_size > limit:
        raise too_big
    try:
        fd = os.open(real, OPEN_FLAGS)
    except PermissionError:
        raise _refuse(name, "permission denied") from None
    except OSError as exc:  # e.g. ELOOP: it became a symlink since it was checked
        raise _refuse(name, exc.strerror or "it cannot be opened") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise _refuse(name, "it is not a regular file (a device, FIFO or socket)")
        chunks: list[bytes] = []
        left = limit + 1
        while left > 0:
            chunk = os.read(fd, min(left, READ_CHUNK))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
    except OSError as exc:
        raise _refuse(name, exc.strerror or "it cannot be read") from None
    finally:
        os.close(fd)
    data = b"".join(chunks)
    if len(data) > limit:
        raise too_big
    return data


def _text(raw: str, data: bytes) -> str:
    if b"\x00" in data:
        raise _refuse(f"file {_shown(raw)}", "it is binary (it contains NUL bytes), not text")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise _refuse(f"file {_shown(raw)}", "it is not UTF-8 text (binary, or another encoding)") from None
    return text.removeprefix("\ufeff")


def _data_url(raw: str, index: int) -> bytes:
    """The bytes a data: URL carries, or the refusal saying what is wrong with it."""
    name = f"images[{index}] (a data: URL)"
    head, comma, payload = raw[5:].partition(",")
    params = [p.strip().lower() for p in head.split(";")]
    if not comma:
        raise InvalidArguments(f"{name}: no comma before the data (data:image/png;base64,...)")
    if params[0] not in IMAGE_TYPES:
        raise InvalidArguments(f"{name}: media type {params[0][:60]!r} is not an image type accepted "
                               f"({', '.join(IMAGE_TYPES)})")
    if "base64" not in params[1:]:
        raise InvalidArguments(f"{name}: the data must be base64 (data:{params[0]};base64,...)")
    payload = _WHITESPACE.sub("", payload)
    if len(payload) // 4 * 3 > MAX_IMAGE_BYTES + 2:
        raise InvalidArguments(f"{name}: over the limit of {MAX_IMAGE_BYTES:,} bytes per image")
    try:
        data = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidArguments(f"{name}: the data is not valid base64") from None
    if len(data) > MAX_IMAGE_BYTES:
        raise InvalidArguments(f"{name}: over the limit of {MAX_IMAGE_BYTES:,} bytes per image")
    return data


def _read_all(files: tuple[str, ...], images: tuple[str, ...], scope: ReadScope) -> Attachments:
    allowed = _Allowed.of(scope)
    blocks: list[str] = []
    total = 0
    for raw in files:
        data = _read_regular(raw, _locate(raw, "file", allowed), "file", MAX_FILE_BYTES, "file")
        text = _text(raw, data)
        total += len(data)
        if total > MAX_FILES_TOTAL:
            raise _refuse(f"file {_shown(raw)}", f"the files add up to {total:,} bytes, over the budget of "
                                                 f"{MAX_FILES_TOTAL:,} bytes for all files of one call")
        ending = "" if text.endswith("\n") else "\n"
        blocks.append(f"--- file: {_plain(raw)} ({len(data):,} bytes) ---\n{text}{ending}"
                      f"--- end of file: {_plain(raw)} ---")
    urls: list[str] = []
    references: list[str] = []
    total = 0
    for index, raw in enumerate(images):
        if is_data_url(raw):
            data, shown, name = _data_url(raw, index), f"images[{index}]", f"images[{index}] (a data: URL)"
        else:
            real = _locate(raw, "image", allowed)
            data = _read_regular(raw, real, "image", MAX_IMAGE_BYTES, "image")
            shown, name = _plain(raw), f"image {_shown(raw)}"
        media = image_type(data)
        if media is None:
            raise _refuse(name, "it is not a PNG, JPEG, WebP or GIF image (judged by its content)")
        total += len(data)
        if total > MAX_IMAGES_TOTAL:
            raise _refuse(name, f"the images add up to {total:,} bytes, over the budget of "
                                f"{MAX_IMAGES_TOTAL:,} bytes for all images of one call")
        urls.append(f"data:{media};base64,{base64.b64encode(data).decode('ascii')}")
        references.append(f"[image: {shown}, {media}, {len(data):,} bytes]")
    return Attachments("\n\n".join(blocks + (["\n".join(references)] if references else [])), tuple(urls))
