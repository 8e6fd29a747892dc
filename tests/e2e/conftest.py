"""The real server, started as a process, on each store.

`server` starts `lastmeter serve` on a free port with the store given by
LASTMETER_DATABASE_URL / LASTMETER_POSTGRES_SCHEMA, waits for /healthz, and
stops it (SIGTERM, then kill) at teardown. One server per store and module
keeps the suite fast; tests share it but each works on cases of its own.
Tokens are made the way an operator makes them: `lastmeter tokens create`.
"""

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import psycopg
import pytest

from tests.helpers import free_port

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent / "lastmeter"
if not BIN.exists():  # not run from the project's venv
    BIN = ROOT / ".venv" / "bin" / "lastmeter"
START_TIMEOUT = 20.0
STOP_TIMEOUT = 5.0


def store_env(database_url: str, postgres_schema: str = "") -> dict[str, str]:
    """This process's environment without any LASTMETER_* of its own, pointed at one store."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LASTMETER_")}
    env.pop("FORCE_COLOR", None)
    env.update(
        LASTMETER_DATABASE_URL=database_url,
        LASTMETER_POSTGRES_SCHEMA=postgres_schema,
        PYTHONUNBUFFERED="1",
        TERM="dumb",
        COLUMNS="250",  # rich wraps at 80 columns when not on a terminal
    )
    return env


@dataclass
class Cli:
    """`lastmeter` subcommands run as processes against one store."""

    env: dict[str, str]
    cwd: Path

    def run(self, *args: str, timeout: float = 30) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(BIN), *args], env=self.env, cwd=self.cwd, capture_output=True, text=True, timeout=timeout
        )

    def token(self, role: str, org_unit: str | None = None, user: str | None = None,
              provider: str | None = None) -> str:
        user = user or f"{role}-{uuid.uuid4().hex[:6]}"
        args = ["tokens", "create", "--user", user, "--role", role]
        if org_unit is not None:
            args += ["--org-unit", org_unit]
        if provider is not None:
            args += ["--provider", provider]
        done = self.run(*args)
        assert done.returncode == 0, f"tokens create failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
        lines = done.stdout.strip().splitlines()
        assert lines, f"tokens create printed nothing:\n{done.stderr}"
        return lines[-1].strip()


@dataclass
class Server:
    """A running `lastmeter serve`: its base URL, its store's command line, tokens."""

    store: str
    base_url: str
    cli: Cli
    process: subprocess.Popen
    log: Path

    def token(self, role: str, org_unit: str | None = None, user: str | None = None,
              provider: str | None = None) -> str:
        return self.cli.token(role, org_unit, user, provider)

    def headers(self, role: str, org_unit: str | None = None, user: str | None = None,
                provider: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(role, org_unit, user, provider)}"}

    def client(self, headers: dict[str, str] | None = None) -> httpx.Client:
        return httpx.Client(base_url=self.base_url, headers=headers or {}, timeout=30)

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


def start(cli: Cli, log: Path, store: str, by_hand: bool = False) -> Server:
    """`lastmeter serve`; or, `by_hand`, uvicorn told to serve the app as an operator might."""
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    command = ([str(BIN.parent / "python"), "-m", "uvicorn", "api.app:serving_app", "--factory"] if by_hand
               else [str(BIN), "serve"])
    with log.open("wb") as out:
        process = subprocess.Popen(
            [*command, "--host", "127.0.0.1", "--port", str(port)],
            env=cli.env, cwd=cli.cwd, stdout=out, stderr=subprocess.STDOUT,
        )
    server = Server(store, base_url, cli, process, log)
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        if process.poll() is not None:
            pytest.fail(f"lastmeter serve exited with {process.returncode}:\n{server.output()}")
        try:
            if httpx.get(f"{base_url}/healthz", timeout=1).status_code == 200:
                return server
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            stop(process)
            pytest.fail(f"lastmeter serve did not answer /healthz within {START_TIMEOUT:.0f} s:\n{server.output()}")
        time.sleep(0.1)


def stop(process: subprocess.Popen) -> None:
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def server(request, tmp_path_factory) -> Iterator[Server]:
    """The real server on each store (the `settings` idea of tests/conftest.py, per module)."""
    store = request.param
    workdir = tmp_path_factory.mktemp(f"e2e-{store}")
    schema = ""
    if store == "sqlite":
        env = store_env(f"sqlite:///{workdir / 'lastmeter.db'}")
    else:
        url = request.getfixturevalue("postgres")
        schema = f"e2e_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f"CREATE SCHEMA {schema}")
        env = store_env(url, schema)
    running = None
    try:
        running = start(Cli(env, workdir), workdir / "server.log", store)
        yield running
    finally:
        if running is not None:
            stop(running.process)
        if schema:
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute(f"DROP SCHEMA {schema} CASCADE")
