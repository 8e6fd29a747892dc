"""What every command of the command line shares: the console, who acts, the store opened and closed,
and refusals said in one line."""

import getpass
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
import typer
from eventsourcing.persistence import PersistenceError
from pydantic import ValidationError
from rich.console import Console

from api.backend import Backend, open_backend
from api.readside import ReadSide
from api.settings import Settings, get_settings
from domain.actor import Actor
from domain.errors import DomainError
from projections.privacy import WrongMasterKey

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
