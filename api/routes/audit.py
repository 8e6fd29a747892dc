"""Audit search over every event of every aggregate."""

from dataclasses import asdict
from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Query

from api.access import Principal
from api.deps import App, Fresh, ReadSideDep, permit
from api.paging import decode_cursor, keyset_page
from api.render import Json, moment
from api.schemas import Moment
from domain.actor import STAFF_ID
from domain.errors import InvalidInput
from projections import chain
from projections.audit import facts, search
from projections.timefmt import from_micros, micros

router = APIRouter(prefix="/v1/audit", tags=["audit"])


@router.get("/events", dependencies=[Fresh])
def audit_events(
    app: App, readside: ReadSideDep, _: Annotated[Principal, permit("read_audit")],
    case_id: Annotated[UUID | None, Query(description="a case's events and those about it (who was shown "
                                                    "it, what was billed for it); a client's id works too")] = None,
    client_id: Annotated[UUID | None, Query(description="a person's: their record's events, every event "
                                                      "holding their values and every read of them")] = None,
    actor: Annotated[str | None, Query(pattern=STAFF_ID.pattern, description="a user id")] = None,
    from_: Annotated[Moment | None, Query(alias="from")] = None,
    to: Moment | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: str | None = None,
):
    """Events in log order with who caused them and when; personal values are not shown here."""
    if case_id is not None and client_id is not None:
        raise InvalidInput("client_id", "give a case_id or a client_id, not both")
    about = case_id or client_id
    with readside.store.read() as tx:
        rows = search(tx, decode_cursor(cursor), limit + 1, str(about) if about else None, actor,
                      micros(from_), micros(to))
    page, more = keyset_page(rows, limit, lambda row: row["position"])
    items = [
        {"position": r["position"], "at": moment(from_micros(r["at"])), "aggregate_id": r["aggregate_id"],
         "aggregate_type": r["aggregate_type"], "version": r["version"], "type": r["type"],
         "actor": {"user": r["actor_user"], "role": r["actor_role"]}, "data": facts(app.mapper.transcoder, r["data"])}
        for r in page
    ]
    return Json({"items": items, "next_cursor": more})


@router.get("/verify")
def verify_log(app: App, readside: ReadSideDep, _: Annotated[Principal, permit("verify_log")]):
    """Recomputes the hash chain over every stored event; names the first position that does not match."""
    result = chain.verify(app.recorder, readside.store)
    return asdict(result)
