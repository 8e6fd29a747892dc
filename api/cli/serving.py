"""Serving: the API, the demo city, and a projector process of its own."""

import copy
import os
import time
from pathlib import Path
from typing import Annotated

import typer

from api.cli.common import configured, console, opened, read_side
from api.settings import Settings


def serve(
    host: str = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535)] = 8000,
    workers: Annotated[int, typer.Option(min=1)] = 1,
    demo: Annotated[bool, typer.Option(help="seed the demo city on first start, print demo tokens")] = False,
) -> None:
    """Serves the API (and docs at /docs) on the configured store."""
    import uvicorn

    settings = configured()
    if demo:
        show_demo_tokens(settings)
    else:  # a store that cannot be opened is said in one line, as every command says it, not by uvicorn
        with opened():
            pass
    console.print(f"store: {redact(settings.database_url)}  →  http://{host}:{port}/docs")
    uvicorn.run("api.app:serving_app", factory=True, host=host, port=port, workers=workers, log_level="info",
                access_log=False, log_config=logging_config(), http="api.protocol:ProblemHttpProtocol")


def logging_config() -> dict:
    """uvicorn's logging, with lastmeter's own loggers (errors, the access log) on its console handler."""
    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config["loggers"]["lastmeter"] = {"handlers": ["default"], "level": "INFO", "propagate": False}
    return config


def demo() -> None:
    """Seeds a synthetic city (townships, villages, people, cases) and prints demo tokens."""
    show_demo_tokens(configured())


def show_demo_tokens(settings: Settings) -> None:
    from api.demo import seed_demo

    tokens_file = demo_tokens_file(settings)
    with opened() as backend:
        tokens = seed_demo(backend.lastmeter)
    if tokens is not None:
        lines = [f"{user:<16} {role:<12} {org_unit or '-':<10} {secret}" for user, role, org_unit, secret in tokens]
        # the demo admin's secret among them: the file is its owner's alone from the moment it exists
        descriptor = os.open(tokens_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.fchmod(descriptor, 0o600)  # one left by an earlier start keeps the mode it had
        with os.fdopen(descriptor, "w") as out:
            out.write("\n".join(lines) + "\n")
        console.print("[green]demo city seeded[/green]")
    if tokens_file.exists():
        console.print(f"demo tokens (kept in {tokens_file}, for the demo only):")
        print(tokens_file.read_text(), flush=True)
    else:  # seeded from another folder, or before each schema kept a file of its own
        console.print(f"the demo city was seeded before, and its tokens are not in {tokens_file}: make one with "
                      "`lastmeter tokens create --user U --role R [--org-unit CODE]`")


def demo_tokens_file(settings: Settings) -> Path:
    """Beside a SQLite store; on PostgreSQL in the working directory, one file per schema (the demo
    tokens of one schema answer 401 on another)."""
    schema = settings.postgres_schema
    on_postgres = ".lastmeter-demo-tokens" if schema in ("", "public") else f".lastmeter-{schema}-demo-tokens"
    return settings.beside_store(".demo-tokens", on_postgres)


def redact(url: str) -> str:
    """The URL without its user and password (which may hold an @ itself: the host follows the last)."""
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://***@{rest.rsplit('@', 1)[1]}"
    return url


def projector() -> None:
    """Keeps the views up to date (run beside `serve` with LASTMETER_RUN_PROJECTOR=false)."""
    with read_side() as readside:
        console.print("following the event log; Ctrl-C to stop")
        readside.start()
        try:
            while readside.following:
                time.sleep(1)
        except KeyboardInterrupt:
            pass
