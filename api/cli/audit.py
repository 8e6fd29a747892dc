"""`lastmeter audit`: a case replayed as of a moment, a statement as served, the hash chain verified
against a digest kept outside the system."""

import json
import re
import sys
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, Optional
from uuid import UUID

import typer
from rich.console import Console
from rich.table import Table

from api.access import Principal
from api.cli.common import console, opened, read_side, refusing
from api.render import case_state, history_entry
from domain.clock import SHANGHAI
from domain.errors import InvalidInput
from projections import chain

group = typer.Typer(help="Audit: replay and verify history.", no_args_is_help=True)


@group.command("replay")
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


@group.command("statement")
def audit_statement(statement: UUID) -> None:
    """Prints a payment statement, replayed from the log, byte for byte as the API serves it."""
    from api.ledger import statement_bytes

    with opened() as backend:
        _, document = statement_bytes(backend.lastmeter, statement)
    # byte for byte, for a digest of it to match the API's; a line of its own only on a terminal
    sys.stdout.buffer.write(document + (b"\n" if sys.stdout.isatty() else b""))


@group.command("verify")
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


@group.command("digest")
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
