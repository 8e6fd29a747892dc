"""Reference data: case-kind declarations and the org tree."""

from typing import Annotated

from fastapi import APIRouter

from api.access import Principal
from api.deps import App, Cursor, WholeLimit, permit
from api.paging import paged
from domain.kinds import KINDS

router = APIRouter(prefix="/v1", tags=["reference"])


@router.get("/case-kinds")
def case_kinds(_: Annotated[Principal, permit("read_reference")], limit: WholeLimit = None, cursor: Cursor = None):
    """Every kind's declared workflow: stages with their days, steps with their payloads."""
    items, more = paged([kind.describe() for kind in KINDS.values()], "name", limit, cursor)
    return {"items": items, "next_cursor": more}


@router.get("/org-units")
def org_units(app: App, _: Annotated[Principal, permit("read_reference")], limit: WholeLimit = None,
              cursor: Cursor = None):
    """The org tree: city, counties/districts, townships/streets, villages/communities."""
    tree = app.org_tree(refresh=True)
    units = [{"code": u.code, "name": u.name, "kind": u.kind, "parent": u.parent} for u in tree]
    items, more = paged(units, "code", limit, cursor)
    return {"items": items, "next_cursor": more}
