"""Store-test fixtures: a real PostgreSQL (`tests/support/postgres.py`), started only for the tests
that ask for it."""

from tests.support.postgres import postgres_server, postgres_url

__all__ = ["postgres_server", "postgres_url"]
