"""Fixtures shared by every test: the two stores, the application, the API.

Every store-touching test runs on SQLite and on PostgreSQL through the
`store` parameter. PostgreSQL tests each get a schema of their own in
LASTMETER_TEST_DATABASE_URL; without PostgreSQL they skip, except under CI,
where a missing PostgreSQL fails the run.
"""

import base64
import os
import uuid
from collections.abc import Iterator

import psycopg
import pytest

from api.backend import Backend, open_backend
from api.settings import Settings
from domain.actor import Actor
from domain.application import LastMeter

PG_URL = os.environ.get("LASTMETER_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")
ADMIN = Actor("test-admin", "admin")
MASTER_KEY = base64.b64encode(os.urandom(32)).decode()


def postgres_available() -> bool:
    try:
        with psycopg.connect(PG_URL, connect_timeout=3):
            return True
    except psycopg.OperationalError:
        return False


@pytest.fixture(scope="session")
def postgres() -> str:
    if not postgres_available():
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL does not answer at {PG_URL} (CI requires it)")
        pytest.skip(f"PostgreSQL does not answer at {PG_URL}")
    return PG_URL


@pytest.fixture(params=["sqlite", "postgres"])
def store(request) -> str:
    return request.param


@pytest.fixture
def settings(store: str, tmp_path, request) -> Iterator[Settings]:
    if store == "sqlite":
        yield Settings(database_url=f"sqlite:///{tmp_path / 'lastmeter.db'}", master_key=MASTER_KEY)
        return
    url = request.getfixturevalue("postgres")
    schema = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    try:
        # In-process tests follow the log in a thread (a process per test would take a second to start);
        # the server tests, and one test of tests/api/test_read_side.py, run it in a process.
        yield Settings(database_url=url, postgres_schema=schema, postgres_pool_size=4, master_key=MASTER_KEY,
                       projector_process=False)
    finally:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")


@pytest.fixture
def backend(settings: Settings) -> Iterator[Backend]:
    opened = open_backend(settings)
    yield opened
    opened.close()


@pytest.fixture
def lastmeter(backend: Backend) -> LastMeter:
    return backend.lastmeter


@pytest.fixture
def cli(settings: Settings, monkeypatch):
    """Runs `lastmeter` commands in-process against this test's store."""
    from typer.testing import CliRunner

    from api.cli import cli as lastmeter_cli
    from api.settings import get_settings

    for name, value in (("DATABASE_URL", settings.database_url), ("POSTGRES_SCHEMA", settings.postgres_schema),
                        ("MASTER_KEY", settings.master_key)):
        monkeypatch.setenv(f"LASTMETER_{name}", value)
    get_settings.cache_clear()
    yield lambda *args: CliRunner().invoke(lastmeter_cli, list(args))
    get_settings.cache_clear()
