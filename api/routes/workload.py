"""Workload: open, overdue, due-soon and closed-this-month cases per assignee, unit or kind."""

from datetime import datetime, timezone
from operator import itemgetter
from typing import Annotated, Literal

from fastapi import APIRouter, Query

from api.access import Principal
from api.deps import App, Cursor, Fresh, ReadSideDep, WholeLimit, permit
from api.paging import paged
from api.spreadsheet import Format, tabular
from domain.clock import month_start
from domain.orgs import OrgTree, depth_of, parent_of
from projections.cases import Where, workload

router = APIRouter(prefix="/v1", tags=["workload"])
FIGURES = ("open", "overdue", "due_soon", "closed_this_month")


@router.get("/workload", dependencies=[Fresh])
def read_workload(
    app: App, readside: ReadSideDep, principal: Annotated[Principal, permit("read_workload")],
    by: Annotated[Literal["assignee", "org_unit", "kind"], Query()] = "org_unit",
    format: Format = "json", limit: WholeLimit = None, cursor: Cursor = None,
):
    """Figures per key; by org unit, a unit's row includes every unit below it."""
    now = datetime.now(timezone.utc)
    tree = app.org_tree()
    where = Where(now, principal.scope_prefix(tree))
    with readside.store.read() as tx:
        rows = workload(tx, by, where, month_start(now))
    if by == "org_unit":
        rows = rolled_up(rows, tree, principal)
    # In key order, the unassigned last (None is never compared with a key: a city has thousands).
    rows = sorted((r for r in rows if r[0] is not None), key=itemgetter(0)) + [r for r in rows if r[0] is None]
    items, more = paged([dict(zip(("key", *FIGURES), row)) for row in rows], "key", limit, cursor)
    return tabular(items, ("key", *FIGURES), format, f"workload-by-{by}", more)


def rolled_up(rows: list[tuple], tree: OrgTree, principal: Principal) -> list[tuple]:
    """Adds each unit's figures to every unit above it, and keeps the units the caller's scope covers.

    Deepest units first, so a unit's total is complete when it is added to its parent: one addition
    per unit, however deep the tree.
    """
    totals: dict[str, list[int]] = {unit: list(values) for unit, *values in rows}
    levels: dict[int, list[str]] = {}
    for unit in totals:
        levels.setdefault(depth_of(unit), []).append(unit)
    for depth in range(max(levels, default=0), 0, -1):
        for unit in levels.get(depth, []):
            parent = parent_of(unit)
            if parent not in totals:
                totals[parent] = [0] * len(FIGURES)
                levels.setdefault(depth - 1, []).append(parent)
            above, figures = totals[parent], totals[unit]
            for i, figure in enumerate(figures):
                above[i] += figure
    return [(unit, *values) for unit, values in totals.items() if principal.covers(tree, unit)]
