"""The `lastmeter` command line."""

import copy
import getpass
import json
import os
import re
import sqlite3
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, Optional
from uuid import UUID

import psycopg
import typer
from eventsourcing.persistence import PersistenceError
from pydantic import ValidationError
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Column, Table

from api.access import Principal
from api.backend import Backend, open_backend
from api.readside import ReadSide
from api.render import case_state, history_entry, moment
from api.settings import Settings, get_settings
from domain.actor import Actor
from domain.clock import SHANGHAI
from domain.errors import DomainError, InvalidInput
from projections import chain
from projections.privacy import WrongMasterKey
from projections.runner import RebuildRunning

cli = typer.Typer(help="lastmeter: need-to-service cases for the disability-service network.", no_args_is_help=True)
tokens_cli = typer.Typer(help="Access tokens.", no_args_is_help=True)
audit_cli = typer.Typer(help="Audit: replay and verify history.", no_args_is_help=True)
orgs_cli = typer.Typer(help="The org tree.", no_args_is_help=True)
projections_cli = typer.Typer(help="The read side's views.", no_args_is_help=True)
import_cli = typer.Typer(help="Imports from files.", no_args_is_help=True)
for group, name in ((tokens_cli, "tokens"), (audit_cli, "audit"), (orgs_cli, "orgs"),
                    (projections_cli, "projections"), (import_cli, "import")):
    cli.add_typer(group, name=name)
console = Console()


def operator() -> Actor:
    """Who runs the command line: the operating-system user, acting as admin."""
    return Actor(f"cli:{getpass.getuser()}", "admin")


# A file the user names must exist and be readable: Typer says so, instead of a traceback.
ExistingFile = typer.Argument(exists=True, dir_okay=False, readable=True)


@contextmanager
def refusing() -> Iterator[None]:
    """A refused command, or input it cannot use, prints the reason and exits 2."""
    try:
        yield
    except DomainError as error:
        console.print(f"[red]error:[/red] {error}")
        raise typer.Exit(2) from None


def configured() -> Settings:
    """The settings; a LASTMETER_* variable that is not valid prints which and why, and exits 2."""
    try:
        return get_settings()
    except ValidationError as error:
        for problem in error.errors():
            console.print(f"[red]error:[/red] LASTMETER_{str(problem['loc'][0]).upper()}: {problem['msg']}")
        raise typer.Exit(2) from None


@contextmanager
def opened() -> Iterator[Backend]:
    """The store, closed afterwards; a refused command, or a store that cannot be opened, prints its
    reason and exits 2."""
    try:
        backend = open_backend(configured())
    except (OSError, sqlite3.Error, psycopg.Error, PersistenceError, DomainError, WrongMasterKey, ValueError) as error:
        # a SQLite store or key file in a folder that does not exist, a PostgreSQL that does not answer,
        # an upgrade's pass refused (one that kept losing races, say), a master key that is not this
        # store's or no key at all (not base64, not 32 bytes), a database URL whose port is no number
        console.print(f"[red]error:[/red] cannot open the store: {error}")
        raise typer.Exit(2) from None
    try:
        with refusing():
            yield backend
    finally:
        backend.close()


@contextmanager
def read_side() -> Iterator[ReadSide]:
    with opened() as backend:
        readside = ReadSide(backend)
        try:
            yield readside
        finally:
            readside.close()


@cli.command()
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


@cli.command()
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


def demo_tokens_file(settings: Settings) -> Path:
    if settings.is_postgres:
        return Path(".lastmeter-demo-tokens")
    return Path(settings.database_url.removeprefix("sqlite:///")).with_suffix(".demo-tokens")


def redact(url: str) -> str:
    """The URL without its user and password (which may hold an @ itself: the host follows the last)."""
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://***@{rest.rsplit('@', 1)[1]}"
    return url


# -- tokens -------------------------------------------------------------------

@tokens_cli.command("create")
def tokens_create(
    user: Annotated[str, typer.Option(help="the staff user id")],
    role: Annotated[str, typer.Option(help="case_worker, supervisor, auditor, contractor or admin")],
    org_unit: Annotated[Optional[str], typer.Option(help="scope of a case_worker or supervisor")] = None,
    provider: Annotated[Optional[str], typer.Option(help="the provider of a contractor")] = None,
    personal_data: Annotated[bool, typer.Option(help="let an auditor see personal values")] = False,
) -> None:
    """Creates a token; it is printed once, alone on the last line, and stored only hashed."""
    with opened() as backend:
        secret = backend.lastmeter.issue_token(operator(), user, role, org_unit, provider, personal_data)
    console.print(f"token for {user} ({role}); keep it, it is not shown again:")
    print(secret)


@tokens_cli.command("list")
def tokens_list() -> None:
    """Every token issued: its id (for revoking), user, role, scope, and whether it is revoked."""
    with opened() as backend:
        tokens = backend.lastmeter.tokens()
    rows = [(str(t.id), t.user, t.role, t.org_unit or t.provider or ("personal data" if t.reads_personal else "-"),
             moment(t.created_on), "yes" if t.revoked else "") for t in tokens]
    if not console.is_terminal:  # piped to grep or awk: whole values, one token a line (a table cut the ids)
        for row in rows:
            print("\t".join(row))
        return
    table = Table(Column("id", no_wrap=True, min_width=36), "user", "role", "scope", "issued", "revoked")
    for row in rows:
        table.add_row(*row)
    console.print(table)


@tokens_cli.command("revoke")
def tokens_revoke(token_id: UUID) -> None:
    """Revokes a token (by the id `tokens list` shows); the next request with it is refused."""
    with opened() as backend:
        backend.lastmeter.revoke_token(operator(), token_id)
    console.print(f"token {token_id} revoked")


# -- audit --------------------------------------------------------------------

@audit_cli.command("replay")
def audit_replay(
    case: UUID,
    as_of: Annotated[Optional[datetime], typer.Option(
        "--as-of", help="ISO 8601 moment, e.g. 2026-03-01T12:00:00+08:00; without an offset, Asia/Shanghai")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="one JSON document: {history, state}")] = False,
) -> None:
    """Prints a case's history and its state as of a moment (default: now), replayed from the log alone."""
    if as_of is not None and as_of.tzinfo is None:
        as_of = as_of.replace(tzinfo=SHANGHAI)
    auditor = Principal("cli", "auditor")
    with opened() as backend:
        app = backend.lastmeter
        state = app.case_as_of(case, as_of, from_log=True) if as_of else app.get_case(case, from_log=True)
        history = [history_entry(event, auditor) for event in app.case_events(case, limit=state.version)]
    if as_json:
        print(json.dumps({"history": history, "state": case_state(state, auditor)}, ensure_ascii=False))
        return
    table = Table(title=f"history of case {case}")
    for column in ("version", "at", "type", "actor", "data"):  # folded, never cut short, however narrow
        table.add_column(column, overflow="fold")
    for entry in history:
        table.add_row(str(entry["version"]), entry["at"], entry["type"],
                      f"{entry['actor']['user']} ({entry['actor']['role']})", str(entry["data"]))
    console.print(table)
    console.print_json(data=case_state(state, auditor))


@audit_cli.command("statement")
def audit_statement(statement: UUID) -> None:
    """Prints a payment statement, replayed from the log, byte for byte as the API serves it."""
    from api.ledger import statement_bytes

    with opened() as backend:
        _, document = statement_bytes(backend.lastmeter, statement)
    sys.stdout.buffer.write(document + b"\n")


@audit_cli.command("verify")
def audit_verify(
    digest: Annotated[Optional[Path], typer.Option(
        exists=True, dir_okay=False, readable=True, help="a digest from `audit digest`: prove nothing changed up to it")] = None,
) -> None:
    """Checks the hash chain over every stored event; names the first bad position."""
    with refusing():
        kept = read_digest(digest) if digest else None
    with read_side() as readside:
        try:
            readside.projector.catch_up()
        except Exception as error:  # views tampered with may not take the log's next events: check what is there
            Console(stderr=True).print(f"[yellow]warning:[/yellow] the views could not follow the log "
                                       f"({type(error).__name__}); the chain is checked as it stands")
        result = chain.verify(readside.projector.app.recorder, readside.store,
                              upto=kept and kept["position"], expected_head=kept and kept["head"])
    console.print_json(data=asdict(result))
    if not result.ok:
        raise typer.Exit(1)


_HASH = re.compile(r"[0-9a-f]{64}")


def read_digest(path: Path) -> dict:
    """What `audit digest` wrote: a position and the chain's head hash there."""
    try:
        kept = json.loads(path.read_text(encoding="utf-8"))
        position, head = kept["position"], kept["head"]
        # a position a store can hold (not a bool, which JSON's true would be) and a SHA-256 in hex:
        # anything else is no digest, never a log found altered
        if type(position) is int and 0 <= position < 2**63 and isinstance(head, str) and _HASH.fullmatch(head):
            return kept
    except (ValueError, TypeError, KeyError, RecursionError):  # not JSON (or too deep), not an object, ...
        pass
    raise InvalidInput("--digest", f"{path} is not a digest written by `lastmeter audit digest`")


@audit_cli.command("digest")
def audit_digest(out: Annotated[Optional[Path], typer.Option(help="write it here (default: print it)")] = None) -> None:
    """Writes a small digest (position, head hash, time) for an auditor to keep outside the system."""
    with read_side() as readside:
        readside.projector.catch_up()
        last = chain.head(readside.store)
    position, head = last or (0, chain.GENESIS)
    text = json.dumps({"position": position, "head": head, "at": datetime.now(timezone.utc).isoformat()})
    if out:
        with refusing():
            try:
                out.write_text(text + "\n")
            except OSError as error:
                raise InvalidInput("--out", f"cannot write {out} ({error.strerror})") from None
        console.print(f"digest of {position} events written to {out}")
    else:
        print(text)


# -- reference data and imports -------------------------------------------------

UNIT_FIELD = re.compile(r"units\[(\d+)\]\.(\w+)")  # how the domain names a field of a unit it is given


@orgs_cli.command("import")
def orgs_import(file: Annotated[Path, ExistingFile]) -> None:
    """Loads org units from a CSV with columns code, name, kind (parents before or after children)."""
    from api.imports import read_org_units

    with refusing():
        units = read_org_units(file.read_bytes())
    with opened() as backend:
        try:
            added = backend.lastmeter.add_org_units(operator(), list(units.values()))
        except InvalidInput as error:  # the domain names a unit by its place in the list; the user sees rows
            place = UNIT_FIELD.fullmatch(error.field)
            if place is None:
                raise
            raise InvalidInput(f"row {list(units)[int(place[1])]} {place[2]}", error.reason) from None
    console.print(f"{added} new org units of {len(units)} in the file")


@import_cli.command("deliveries")
def import_deliveries(
    file: Annotated[Path, ExistingFile],
    contract: Annotated[UUID, typer.Option(help="the contract the deliveries are reported under")],
) -> None:
    """Imports a contractor's CSV or XLSX of deliveries; prints each row's result."""
    from api.imports import read_rows

    with opened() as backend:
        _, results = backend.lastmeter.import_deliveries(operator(), None, contract,
                                                         read_rows(file.read_bytes(), file.name))
    table = Table("row", "result", "reference", "reason")
    for r in results:
        if r.result != "recorded":
            table.add_row(str(r.row), r.result, r.reference or "", r.reason or "")
    console.print(table)
    counts = {name: sum(r.result == name for r in results) for name in ("recorded", "duplicate", "refused")}
    console.print(", ".join(f"{n} {name}" for name, n in counts.items()))


# -- the read side ---------------------------------------------------------------

@projections_cli.command("status")
def projections_status() -> None:
    """Each view's position and lag."""
    with read_side() as readside:
        statuses = readside.projector.statuses()
    table = Table("view", "position", "head", "lag")
    for s in statuses:
        table.add_row(s.name, str(s.position), str(s.head), str(s.lag))
    console.print(table)


@projections_cli.command("rebuild")
def projections_rebuild(name: Annotated[Optional[str], typer.Argument(help="one view; default: all")] = None) -> None:
    """Rebuilds views beside the live ones from the whole log, swapping each in once caught up."""
    with read_side() as readside:
        projector = readside.projector
        names = [name] if name else list(projector.views)
        unknown = [n for n in names if n not in projector.views]
        if unknown:
            console.print(f"[red]error:[/red] no view {unknown[0]!r}; views: {', '.join(projector.views)}")
            raise typer.Exit(2)
        started = time.perf_counter()
        try:  # the bar, transient, is gone before an error is said
            with Progress(TextColumn(", ".join(names)), BarColumn(), MofNCompleteColumn(),
                          TextColumn("{task.fields[rate]} events/s"), TimeElapsedColumn(), console=console,
                          transient=True) as bar:
                task = bar.add_task("rebuild", total=max(projector.head(), 1), rate="-")

                def progress(done: int, total: int) -> None:  # events folded and positions read
                    elapsed = time.perf_counter() - started
                    bar.update(task, completed=done, total=max(total, done, 1), rate=f"{done / elapsed:,.0f}")

                position = projector.rebuild(names, progress)
        except chain.ChainBroken as broken:
            console.print(f"[red]error:[/red] {broken}; nothing was swapped in")
            raise typer.Exit(1) from None
        except RebuildRunning as busy:
            console.print(f"[red]error:[/red] {busy}")
            raise typer.Exit(2) from None
        elapsed = time.perf_counter() - started
        console.print(f"rebuilt {', '.join(names)}: the log up to position {position:,} in {elapsed:.1f} s "
                      f"({position / elapsed:,.0f} log events/s)")


@cli.command()
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


def main() -> None:
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    cli()
