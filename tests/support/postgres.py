"""A real PostgreSQL for the store tests, and a fresh database for each test.

`postgres_server` (session): the server named by `KIMI_TEST_POSTGRES_URL` when set (CI starts one
with `.ci/postgres.sh`), else a private one started here from the PostgreSQL server binaries
(`initdb`, `pg_ctl`; `KIMI_TEST_POSTGRES_BIN`, else the newest `/usr/lib/postgresql/*/bin`, else
`PATH`) in a temporary directory: 127.0.0.1 and a free port only, trust authentication, no fsync,
run as the `postgres` user when we are root (initdb refuses root). It is stopped and removed at the
end. With neither, the tests that need it are skipped, or fail when `KIMI_TEST_REQUIRE_POSTGRES=1`.

`postgres_url` (function): a URL whose search_path is a new, empty schema on that server, dropped
after the test; a store opened on it sees nothing of other tests.

Imported by `tests/conftest.py`; a server starts only when a test asks for one.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import pwd
import re
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

import pytest

__all__ = [
    "PostgresServer",
    "PrivateServer",
    "find_bindir",
    "postgres_server",
    "postgres_url",
    "start_private_server",
    "unavailable",
    "with_password",
]

URL_ENV = "KIMI_TEST_POSTGRES_URL"
REQUIRE_ENV = "KIMI_TEST_REQUIRE_POSTGRES"
BIN_ENV = "KIMI_TEST_POSTGRES_BIN"
_COMMAND_TIMEOUT_S = 60
# Test servers hold throwaway data: durability off makes initdb, CREATE DATABASE and commits fast.
_SERVER_SETTINGS = (
    "listen_addresses=127.0.0.1",
    "fsync=off",
    "synchronous_commit=off",
    "full_page_writes=off",
    "max_connections=200",
)
_names = itertools.count()


def unavailable(reason: str) -> None:
    """Skip, or fail when the run requires PostgreSQL (CI)."""
    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(f"{reason} ({REQUIRE_ENV}=1)")
    pytest.skip(reason)


def find_bindir() -> Path | None:
    """A directory holding initdb and pg_ctl, or None."""
    configured = os.environ.get(BIN_ENV)
    candidates = [Path(configured)] if configured else []
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=_version, reverse=True)
    candidates += versions
    on_path = shutil.which("pg_ctl")
    if on_path:
        candidates.append(Path(on_path).parent)
    return next((d for d in candidates if (d / "initdb").is_file() and (d / "pg_ctl").is_file()), None)


def _version(bindir: Path) -> tuple[int, ...]:
    return tuple(int(n) for n in re.findall(r"\d+", bindir.parent.name)) or (0,)


def _free_port() -> int:
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class PrivateServer:
    """A PostgreSQL server of our own: a data directory under `base`, on 127.0.0.1:`port`."""

    bindir: Path
    base: Path
    port: int = 0
    user: str = "postgres"  # the database superuser initdb creates
    _as_user: list[str] = field(default_factory=list)

    @property
    def data(self) -> Path:
        return self.base / "data"

    @property
    def log(self) -> Path:
        return self.base / "server.log"

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{dbname}"

    def _run(self, *args: str) -> None:
        command = [*self._as_user, *args]
        done = subprocess.run(command, cwd=self.base, capture_output=True, text=True, timeout=_COMMAND_TIMEOUT_S,
                              check=False)
        if done.returncode != 0:
            log = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
            raise RuntimeError(f"{' '.join(command)} failed ({done.returncode}): {done.stderr.strip()}\n{log}")

    def _pg_ctl(self, *args: str) -> None:
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-w",
                  "-t", str(_COMMAND_TIMEOUT_S), *args)

    def init(self) -> None:
        if os.geteuid() == 0:  # initdb and postgres refuse to run as root
            try:
                account = pwd.getpwnam("postgres")
            except KeyError:
                raise RuntimeError("running as root, and there is no 'postgres' user to run PostgreSQL as") from None
            os.chown(self.base, account.pw_uid, account.pw_gid)
            self._as_user = ["runuser", "-u", "postgres", "--"]
        self._run(str(self.bindir / "initdb"), "-D", str(self.data), "-U", self.user, "--auth=trust",
                  "--encoding=UTF8", "--locale=C", "--no-sync", "--no-instructions")

    def start(self, *, same_port: bool = False) -> None:
        """Start on a free port (again on another one if that port was taken meanwhile); `same_port`:
        again on the port it had (after `stop`, as a database that comes back)."""
        for attempt in range(3):
            if not (same_port and self.port):
                self.port = _free_port()
            options = " ".join(f"-c {setting}" for setting in (*_SERVER_SETTINGS, f"port={self.port}",
                                                              f"unix_socket_directories={self.base}"))
            try:
                self._pg_ctl("-o", options, "start")
                return
            except RuntimeError:
                if attempt == 2:
                    raise

    def restart(self) -> None:
        """Stop (fast: connections are cut) and start again on the same port and settings."""
        self._pg_ctl("-m", "fast", "restart")

    def stop(self, mode: str = "immediate") -> None:
        if (self.data / "postmaster.pid").exists():
            self._pg_ctl("-m", mode, "stop")

    def remove(self) -> None:
        """Stop the server and delete its directory."""
        try:
            self.stop()
        finally:
            shutil.rmtree(self.base, ignore_errors=True)


def start_private_server(bindir: Path) -> PrivateServer:
    """initdb and start a server in a new temporary directory (removed again if that fails)."""
    server = PrivateServer(bindir, Path(tempfile.mkdtemp(prefix="kimi-mcp-pg-")))
    try:
        server.init()
        server.start()
    except BaseException:
        shutil.rmtree(server.base, ignore_errors=True)
        raise
    return server


@dataclass
class PostgresServer:
    """The server the tests use: `admin_url` reaches its maintenance database as a superuser."""

    admin_url: str
    private: PrivateServer | None = None

    def url_for(self, dbname: str, query: str = "") -> str:
        """The admin URL with another database (and extra query parameters)."""
        parts = urlsplit(self.admin_url)
        joined = "&".join(q for q in (parts.query, query) if q)
        return urlunsplit((parts.scheme, parts.netloc, "/" + quote(dbname), joined, parts.fragment))

    def create_schema(self) -> str:
        """A new, empty schema in the admin database; the URL that makes it the search_path, so a
        store there sees nothing of any other test (CREATE SCHEMA costs far less than CREATE DATABASE)."""
        import psycopg

        name = f"kimi_test_{os.getpid()}_{next(_names)}"
        with psycopg.connect(self.admin_url, autocommit=True, connect_timeout=10) as conn:
            conn.execute(f'CREATE SCHEMA "{name}"')
        dbname = urlsplit(self.admin_url).path.lstrip("/") or "postgres"
        return self.url_for(dbname, "options=" + quote(f"-csearch_path={name}", safe=""))

    def drop_schema(self, url: str) -> None:
        """Drop a schema `create_schema` made (bounded: a test that leaked a transaction keeps it)."""
        import psycopg

        name = _schema_of(url)
        with psycopg.connect(self.admin_url, autocommit=True, connect_timeout=10) as conn:
            conn.execute("SET lock_timeout = '5s'")
            with contextlib.suppress(psycopg.errors.LockNotAvailable):
                conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')


def _schema_of(url: str) -> str:
    match = re.search(r"search_path%3D(\w+)", urlsplit(url).query)
    assert match is not None, url
    return match.group(1)


def with_password(url: str, password: str = "pw-never-shown") -> tuple[str, str]:
    """The URL with a password in it (trust authentication ignores it), and that password; a URL that
    already has one keeps it (the server may need it)."""
    parts = urlsplit(url)
    if parts.password:
        return url, parts.password
    userinfo, _, hostport = parts.netloc.rpartition("@")
    netloc = f"{userinfo or 'postgres'}:{quote(password, safe='')}@{hostport}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment)), password


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """CI's server (KIMI_TEST_POSTGRES_URL), else a private one for the session, else skip."""
    try:
        import psycopg  # noqa: F401
        import psycopg_pool  # noqa: F401
    except ImportError as err:
        unavailable(f"the PostgreSQL driver is not installed ({err}): pip install -e '.[test]'")
    url = os.environ.get(URL_ENV)
    if url:
        yield PostgresServer(url)
        return
    bindir = find_bindir()
    if bindir is None:
        unavailable(f"no PostgreSQL server binaries (initdb, pg_ctl) found: install PostgreSQL, or set {URL_ENV}")
        return
    server = start_private_server(bindir)
    try:
        yield PostgresServer(server.url(), server)
    finally:
        server.remove()


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> Iterator[str]:
    """A fresh, empty place for one test (a schema of its own, as the URL's search_path), dropped after."""
    url = postgres_server.create_schema()
    try:
        yield url
    finally:
        postgres_server.drop_schema(url)
