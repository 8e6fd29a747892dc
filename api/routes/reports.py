"""Reports: the liaisons' monthly work subsidy."""

from typing import Annotated

from fastapi import APIRouter, Query

from api.access import Principal
from api.deps import App, Cursor, Fresh, ReadSideDep, SettingsDep, WholeLimit, permit
from api.ledger import yuan
from api.paging import paged
from api.spreadsheet import Format, tabular
from domain.clock import month_bounds
from domain.subsidy import SubsidyTiers
from projections.subsidies import liaison_work, liaisons_in

router = APIRouter(prefix="/v1/reports", tags=["reports"])
COLUMNS = ("liaison", "cases_handled", "visits", "subsidy")


@router.get("/liaison-subsidies", dependencies=[Fresh])
def liaison_subsidies(
    app: App, readside: ReadSideDep, settings: SettingsDep,
    principal: Annotated[Principal, permit("read_subsidies")],
    month: Annotated[str, Query(description="YYYY-MM, Asia/Shanghai")],
    format: Format = "json", limit: WholeLimit = None, cursor: Cursor = None,
):
    """Each liaison's work in the month (cases handled + visits recorded) and the subsidy it earns.

    A subsidy is one amount per liaison and month, whoever asks: the caller's scope chooses the
    liaisons listed (those who handled a case in it), not the work counted for them. Counting only
    the work inside the scope, two township supervisors each reported half of one liaison's work,
    and the tiers made the halves worth more than the whole."""
    start, end = month_bounds("month", month)
    tiers = SubsidyTiers.parse(settings.subsidy_tiers)
    prefix = principal.scope_prefix(app.org_tree())
    with readside.store.read() as tx:
        work = liaison_work(tx, start, end)
        listed = liaisons_in(tx, start, end, prefix) if prefix else work.keys()
    items, more = paged([
        {"liaison": liaison, "cases_handled": cases, "visits": visits,
         "subsidy": yuan(tiers.subsidy(cases + visits))}
        for liaison, (cases, visits) in sorted(work.items()) if liaison in listed
    ], "liaison", limit, cursor)
    return tabular(items, COLUMNS, format, f"liaison-subsidies-{month}", more, money=("subsidy",))
