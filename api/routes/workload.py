"""Workload: open, overdue, due-soon and closed-this-month cases per assignee, unit or kind."""

from collections import defaultdict
from datetime import datetime, timezone
from typing import Annotated, Literal

from fastapi import APIRouter, Query

from api.access import Principal
from api.deps import App, Fresh, ReadSideDep, permit
from api.spreadsheet import Format, tabular
from domain.clock import local
from domain.orgs import OrgTree
from projections.cases import Where, workload

router = APIRouter(prefix="/v1", tags=["workload"])
FIGURES = ("open", "overdue", "due_soon", "closed_this_month")


@router.get("/workload", dependencies=[Fresh])
def read_workload(
    app: App, readside: ReadSideDep, principal: Annotated[Principal, permit("read_workload")],
    by: Annotated[Literal["assignee", "org_unit", "kind"], Query()] = "org_unit",
    format: Format = "json",
):
    """Figures per key; by org unit, a unit's row includes every unit below it."""
    now = datetime.now(timezone.utc)
    month_start = local(now).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    tree = app.org_tree()
    where = Where(now, principal.scope_prefix(tree))
    with readside.store.read() as tx:
        rows = workload(tx, by, where, month_start)
    if by == "org_unit":
        rows = rolled_up(rows, tree, principal)
    items = [{"key": key, **dict(zip(FIGURES, (int(v or 0) for v in values)))} for key, *values in rows]
    items = sorted(items, key=lambda i: (i["key"] is None, i["key"] or ""))
    return tabular(items, ("key", *FIGURES), format, f"workload-by-{by}")


def rolled_up(rows: list[tuple], tree: OrgTree, principal: Principal) -> list[tuple]:
    """Adds each unit's figures to every unit above it that the caller's scope covers."""
    totals: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    covered: dict[str, bool] = {}  # one scope question per unit, however many rows roll up through it
    for unit, *values in rows:
        for ancestor in tree.ancestors(unit):
            if ancestor not in covered:
                covered[ancestor] = principal.covers(tree, ancestor)
            if covered[ancestor]:
                totals[ancestor] = [a + int(b or 0) for a, b in zip(totals[ancestor], values)]
    return [(unit, *values) for unit, values in totals.items()]
