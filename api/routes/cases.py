"""Service cases: open, act on, and read, now or as they stood in the past."""

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Annotated, Any, Literal
from uuid import UUID

from fastapi import APIRouter, Body, Depends, Query, Request

from api.access import Principal
from api.deps import (App, Fresh, Idem, IdempotencyKey, IfMatch, ReadSideDep, check_placed_in_scope, expected_version,
                      idempotency, permit)
from api.disclosure import answering, disclose
from api.paging import decode_cursor, keyset_page
from api.render import Json, case_state, history_entry, listed_case, visit_contact
from api.schemas import AssignmentIn, CaseIn, ClosureIn, Moment, NoteIn, ReasonIn, ReferralIn, VisitIn
from api.spreadsheet import Format, tabular
from api.writes import answer
from domain.actor import STAFF_ID, Actor
from domain.application import Idempotency, LastMeter, Written
from domain.case import ServiceCase
from domain.errors import InvalidInput, NotFound
from domain.kinds import KINDS, STAGES
from domain.orgs import code_prefix
from projections import audit
from projections import cases as views
from projections.cases import LISTED, Where
from projections.timefmt import micros

router = APIRouter(prefix="/v1/cases", tags=["cases"])
PAGE_LIMIT, JSON_LIMIT, EXPORT_LIMIT = 50, 500, 10_000  # cases in a list's page: by default, at most; exported


def case_in_scope(app: LastMeter, principal: Principal, case_id: UUID) -> ServiceCase:
    """The case, or 404 when it does not exist or lies outside the caller's scope."""
    case = app.get_case(case_id)
    case_guard(app, principal)(case)
    return case


def case_guard(app: LastMeter, principal: Principal) -> Callable[[ServiceCase], None]:
    """A guard that answers 404 for a case outside the caller's scope: its existence is not revealed."""

    def guard(case: ServiceCase) -> None:
        if not principal.sees_case(app.org_tree(), case.org_unit, case.referrals.values()):
            raise NotFound(f"case {case.id} not found")

    return guard


@dataclass
class CaseCommand:
    """A command on one case, by one caller, with its If-Match and Idempotency-Key."""

    app: LastMeter
    principal: Principal
    idem: Idempotency | None
    expected: int | None
    case_id: UUID

    def erased(self, case: ServiceCase) -> bool:
        """Whether the case's person was erased: then a reason, which may speak of them, is not recorded."""
        return self.app.was_erased(case.client_id)

    @property
    def guard(self) -> Callable[[ServiceCase], None]:
        return case_guard(self.app, self.principal)

    def run(self, act: Callable[[ServiceCase, Actor], None]) -> Json:
        actor = self.principal.actor
        return self.write(lambda: self.app.update_case(self.idem, self.case_id, self.expected,
                                                       lambda case: act(case, actor), self.guard))

    def write(self, command: Callable[[], Written]) -> Json:
        """Runs the command, recording in it that its answer shows the caller the person's values."""
        with answering(self.principal):
            written = command()
        return answer(self.app, self.principal, written)


async def get_case_command(
    request: Request, case_id: UUID, principal: Annotated[Principal, permit("update_case")],
    idempotency_key: IdempotencyKey = None, if_match: IfMatch = None,
) -> CaseCommand:
    """The command's parts, read in one dependency rather than one each: FastAPI solves every node of
    a dependency tree on every request, and case commands are most of the API's traffic. The case is
    loaded, and the caller's scope checked, inside the command."""
    return CaseCommand(request.app.state.lastmeter, principal, await idempotency(request, principal, idempotency_key),
                       expected_version(if_match), case_id)


Command = Annotated[CaseCommand, Depends(get_case_command)]


@router.post("", status_code=201)
def open_case(body: CaseIn, app: App, principal: Annotated[Principal, permit("open_case")], idem: Idem):
    """Opens a case for one need of one person, at its kind's first stage."""
    check_placed_in_scope(app, principal, "org_unit", body.org_unit)
    tree = app.org_tree()
    try:
        client = app.get_client(body.client_id)
    except NotFound:
        client = None
    if client is None or not principal.covers(tree, client.org_unit):  # the same answer: existence not revealed
        raise InvalidInput("client_id", "no such client in your scope")
    with answering(principal):
        written = app.open_case(principal.actor, idem, **body.model_dump())
    return answer(app, principal, written)


@router.get("", dependencies=[Fresh])
def list_cases(
    app: App, readside: ReadSideDep, principal: Annotated[Principal, permit("list_cases")],
    org_unit: Annotated[str | None, Query(description="this unit and every unit below it")] = None,
    assignee: Annotated[str | None, Query(pattern=STAFF_ID.pattern)] = None,
    client_id: Annotated[UUID | None, Query(description="only this person's cases")] = None,
    kind: str | None = None,
    stage: str | None = None,
    status: Annotated[Literal["open", "on_hold", "closed", "active"] | None,
                      Query(description="active: open or on hold, the cases the workload counts as open")] = None,
    overdue: bool | None = None,
    unassigned: Annotated[bool | None, Query(description="true: only cases no one is assigned; false: only "
                                                         "assigned ones")] = None,
    limit: Annotated[int | None, Query(ge=1, le=EXPORT_LIMIT, description="at most this many cases: 1-500 "
                                       "(default 50) as JSON; as CSV or XLSX, 1-10000 (default 10000)")] = None,
    cursor: str | None = None,
    format: Format = "json",
):
    """Cases in the caller's scope, newest first, filtered; paged with `cursor`; JSON, CSV or XLSX.

    An export is a file a browser saves, where the X-Next-Cursor header goes unseen: it holds up to
    10,000 cases by default, not a page of 50."""
    if limit is None:
        limit = PAGE_LIMIT if format == "json" else EXPORT_LIMIT
    elif format == "json" and limit > JSON_LIMIT:
        raise InvalidInput("limit", f"must be at most {JSON_LIMIT} as JSON ({EXPORT_LIMIT} as CSV or XLSX)")
    if kind is not None and kind not in KINDS:
        raise InvalidInput("kind", f"must be one of {', '.join(KINDS)}")
    if stage is not None and stage not in STAGES:
        raise InvalidInput("stage", "is not a stage of any kind (see GET /v1/case-kinds)")
    if org_unit is not None:
        app.check_org_unit("org_unit", org_unit)
    if principal.role == "contractor":  # its scope is its provider's referrals, not an org unit
        prefix = code_prefix(org_unit) if org_unit else None
    else:
        prefix = principal.scope_prefix(app.org_tree(), org_unit)
    if unassigned and assignee is not None:
        raise InvalidInput("unassigned", "cannot be true with an assignee")
    where = Where(datetime.now(timezone.utc), prefix, provider=principal.provider, assignee=assignee,
                  client_id=str(client_id) if client_id else None, kind=kind, stage=stage,
                  status=None if status == "active" else status, overdue=overdue, unassigned=unassigned,
                  active=status == "active")
    with readside.store.read() as tx:
        rows = views.list_cases(tx, where, limit + 1, decode_cursor(cursor) if cursor else None)
    page, more = keyset_page(rows, limit, lambda row: row["opened_position"])
    return tabular([listed_case(row) for row in page], LISTED, format, "cases", more)


@router.get("/{case_id}")
def read_case(
    request: Request, case_id: UUID, app: App, principal: Annotated[Principal, permit("read_case")],
    version: Annotated[int | None, Query(ge=1, description="the case as it was at this version")] = None,
    as_of: Annotated[Moment | None, Query(description="the case as it stood at this moment")] = None,
):
    """The case now, at a past version, or as it stood at a past moment."""
    # For a moment, the audit view's version then is a guess the log confirms in one read (instead
    # of a bisection's dozen for a long case). The read side comes from the request, not from a
    # dependency: most reads are of the case now, and a dependency costs every request.
    if version is not None and as_of is not None:
        raise InvalidInput("as_of", "give either version or as_of, not both")
    case = case_in_scope(app, principal, case_id)
    if version is not None:
        if version > case.version:
            raise NotFound(f"case {case_id} has no version {version}")
        case = app.get_case(case_id, version)
    elif as_of is not None:
        with request.app.state.readside.store.read() as tx:
            near = audit.version_at(tx, str(case_id), micros(as_of))
        case = app.case_as_of(case_id, as_of, near=near, current=case.version)
    state = case_state(case, principal)
    if principal.role == "contractor":
        state["visit_contact"] = visit_contact(app.get_client(case.client_id))
    disclose(app, principal, case.client_id, "case", case_id)
    return Json(state, headers={"ETag": f'"{case.version}"'})


@router.get("/{case_id}/history")
def read_history(
    case_id: UUID, app: App, principal: Annotated[Principal, permit("read_history")],
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    cursor: str | None = None,
):
    """Every event of the case, oldest first: version, type, time, actor and data."""
    case = case_in_scope(app, principal, case_id)
    events = app.case_events(case_id, after=decode_cursor(cursor), limit=limit + 1)
    page, more = keyset_page(events, limit, lambda event: event.originator_version)
    disclose(app, principal, case.client_id, "history", case_id)
    return Json({"items": [history_entry(e, principal) for e in page], "next_cursor": more})


@router.post("/{case_id}/assignment")
def assign(body: AssignmentIn, command: Command):
    """Assigns the case to a staff user who may work cases in its org unit (or whom no token names yet)."""
    return command.run(lambda case, actor: case.assign(actor, body.assignee, command.app.roster))


@router.post("/{case_id}/notes")
def add_note(body: NoteIn, command: Command):
    """Adds a note about the case (personal data)."""
    return command.run(lambda case, actor: case.add_note(actor, body.text))


@router.post("/{case_id}/visits")
def record_visit(body: VisitIn, command: Command):
    """Records a visit: centralised, door to door, or by proxy."""
    return command.run(lambda case, actor: case.record_visit(actor, body.mode, body.visited_at, body.summary))


@router.post("/{case_id}/steps/{step}")
def take_step(step: str, command: Command, payload: Annotated[dict[str, Any] | None, Body()] = None):
    """Takes one of the kind's own steps (see GET /v1/case-kinds) with its payload."""
    return command.write(lambda: command.app.take_step(
        command.principal.actor, command.idem, command.case_id, command.expected, step, payload or {}, command.guard))


@router.post("/{case_id}/referral")
def refer(body: ReferralIn, command: Command):
    """Refers the case to a purchased-service contract covering its kind, org unit and today."""
    case_in_scope(command.app, command.principal, command.case_id)  # a case outside scope: 404 before all else
    try:
        contract = command.app.get_contract(body.contract_id)
    except NotFound:
        raise InvalidInput("contract_id", "no such contract") from None
    if not command.principal.sees_contract(command.app.org_tree(), contract.provider, contract.org_units):
        raise InvalidInput("contract_id", "no such contract")
    return command.write(lambda: command.app.refer_case(
        command.principal.actor, command.idem, command.case_id, command.expected, body.contract_id, command.guard))


@router.post("/{case_id}/hold")
def put_on_hold(body: ReasonIn, command: Command):
    """Puts the case on hold; its stage clock stops."""
    return command.run(lambda case, actor: case.put_on_hold(actor, body.reason, command.erased(case)))


@router.post("/{case_id}/resume")
def resume(body: ReasonIn, command: Command):
    """Resumes a case on hold; its due date moves by the time it was held."""
    return command.run(lambda case, actor: case.resume(actor, body.reason, command.erased(case)))


@router.post("/{case_id}/closure")
def close(body: ClosureIn, command: Command):
    """Closes the case with an outcome: served, withdrawn, refused or transferred."""
    return command.run(lambda case, actor: case.close(actor, body.outcome, body.reason))


@router.post("/{case_id}/reopening")
def reopen(body: ReasonIn, command: Command):
    """Reopens a closed case at the stage it was closed from."""
    return command.run(lambda case, actor: case.reopen(actor, body.reason, command.erased(case)))
