"""`lastmeter projections`: the read side's views, their lag, and rebuilds."""

import time
from typing import Annotated, Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from api.cli.common import console, read_side
from projections import chain
from projections.runner import RebuildRunning

group = typer.Typer(help="The read side's views.", no_args_is_help=True)


@group.command("status")
def projections_status() -> None:
    """Each view's position and lag."""
    with read_side() as readside:
        statuses = readside.projector.statuses()
    table = Table("view", "position", "head", "lag")
    for s in statuses:
        table.add_row(s.name, str(s.position), str(s.head), str(s.lag))
    console.print(table)


@group.command("rebuild")
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
