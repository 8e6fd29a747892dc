"""`lastmeter orgs import` and `lastmeter import deliveries`: reference data and reports from files."""

import re
from pathlib import Path
from typing import Annotated
from uuid import UUID

import typer
from rich.table import Table

from api.cli.common import ExistingFile, console, opened, operator, refusing
from domain.errors import InvalidInput
from domain.purchasing import tally

orgs_group = typer.Typer(help="The org tree.", no_args_is_help=True)
import_group = typer.Typer(help="Imports from files.", no_args_is_help=True)


UNIT_FIELD = re.compile(r"units\[(\d+)\]\.(\w+)")  # how the domain names a field of a unit it is given


@orgs_group.command("import")
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


@import_group.command("deliveries")
def import_deliveries(
    file: Annotated[Path, ExistingFile],
    contract: Annotated[UUID, typer.Option(help="the contract the deliveries are reported under")],
) -> None:
    """Imports a contractor's CSV or XLSX of deliveries; prints each row's result. Exits 2 if any row
    was refused (the others are recorded), so that a scheduled import does not pass one by."""
    from api.imports import read_rows

    with opened() as backend:
        _, results = backend.lastmeter.import_deliveries(operator(), None, contract,
                                                         read_rows(file.read_bytes(), file.name))
    table = Table("row", "result", "reference", "reason")
    for r in results:
        if r.result != "recorded":
            table.add_row(str(r.row), r.result, r.reference or "", r.reason or "")
    console.print(table)
    counts = tally(results)
    console.print(", ".join(f"{n} {name}" for name, n in counts.items()))
    if counts["refused"]:
        raise typer.Exit(2)
