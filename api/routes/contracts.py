"""Purchased services: contracts, deliveries, reviews, the ledger and payment statements."""

from collections.abc import Callable
from typing import Annotated, Literal
from uuid import UUID

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import Response

from api.access import NOTHING, Principal
from api.bodylimit import MAX_UPLOAD
from api.deps import (App, Cursor, ExpectedVersion, Fresh, Idem, IdempotencyKey, ReadSideDep, WholeLimit,
                      check_placed_in_scope, idempotency, permit, principal_of)
from api.imports import read_rows
from api.ledger import contract_state, delivery_state, statement_bytes, yuan
from api.paging import paged
from api.render import Json
from api.schemas import ContractIn, DeliveryIn, ReviewIn, StatementIn
from api.spreadsheet import Format, tabular
from api.writes import answer, write_headers
from domain.application import Idempotency, LastMeter
from domain.case import ServiceCase
from domain.clock import check_month
from domain.contract import Contract
from domain.errors import InvalidInput, NotFound
from domain.purchasing import DeliveryRow, tally
from projections import cases as views

router = APIRouter(prefix="/v1/contracts", tags=["contracts"])
DELIVERY_COLUMNS = ("reference", "id", "case_id", "delivered_on", "units", "amount", "status", "statement_id")


def visible_contract(app: LastMeter, principal: Principal, contract_id: UUID) -> Contract:
    contract = app.get_contract(contract_id)
    if not principal.sees_contract(app.org_tree(), contract.provider, contract.org_units):
        raise NotFound(f"contract {contract_id} not found")
    return contract


def delivery_guard(app: LastMeter, principal: Principal, delivery_id: UUID) -> Callable[[ServiceCase], None]:
    """A guard that answers 404 for a delivery whose case lies outside the caller's scope (a contract
    may span units the caller does not cover), as for one that does not exist: delivery ids follow
    from references, which can be guessed."""
    tree = app.org_tree()

    def guard(case: ServiceCase) -> None:
        if not principal.sees_delivery(tree, case.org_unit):
            raise NotFound(f"delivery {delivery_id} not found")

    return guard


@router.post("", status_code=201)
def create_contract(body: ContractIn, app: App, principal: Annotated[Principal, permit("create_contract")], idem: Idem):
    """Creates a government purchased-service contract with a provider."""
    for i, unit in enumerate(body.org_units):
        check_placed_in_scope(app, principal, f"org_units[{i}]", unit)
    return answer(app, principal, app.create_contract(principal.actor, idem, **body.model_dump()))


@router.get("/{contract_id}")
def read_contract(contract_id: UUID, app: App, principal: Annotated[Principal, permit("read_contract")]):
    """The contract and its ledger: units and yuan delivered, accepted, rejected, pending; the budget left."""
    return contract_state(visible_contract(app, principal, contract_id))


@router.post("/{contract_id}/deliveries", status_code=201)
def report_delivery(contract_id: UUID, body: DeliveryIn, app: App,
                    principal: Annotated[Principal, permit("report_delivery")], idem: Idem, expected: ExpectedVersion):
    """Reports one delivery; a reference already recorded on the contract answers the first answer.
    `If-Match` names the contract's version."""
    visible_contract(app, principal, contract_id)
    row = DeliveryRow(body.case_id, body.delivered_on, body.units, body.reference)
    return answer(app, principal, app.report_delivery(principal.actor, idem, contract_id, row, expected))


async def uploaded(request: Request) -> tuple[bytes, str]:
    """The file of an import: the request body (CSV or XLSX) or the multipart field `file`."""
    kind = request.headers.get("content-type", "")
    if kind.startswith("multipart/form-data"):
        form = await request.form()
        upload = form.get("file")
        if upload is None or isinstance(upload, str):
            raise InvalidInput("file", "the multipart field file is missing")
        content, kind = await upload.read(), upload.filename or upload.content_type or ""
    else:
        content = await request.body()
    if not content:
        raise InvalidInput("file", "is empty")
    if len(content) > MAX_UPLOAD:
        raise HTTPException(413, f"the file is larger than {MAX_UPLOAD // (1024 * 1024)} MB")
    return content, kind


Upload = Annotated[tuple[bytes, str], Depends(uploaded)]


async def import_idempotency(request: Request, upload: Upload,
                             idempotency_key: IdempotencyKey = None) -> Idempotency | None:
    """An import's Idempotency-Key goes with the file and its name or media type, not the request
    body: a client sends each multipart body with a boundary of its own, so a retried upload differs
    there; and a retry may spell the type otherwise (`Text/CSV; charset=utf-8`), as receipts stored
    before 2026-11-30 kept it."""
    content, kind = upload
    sent, as_before = (name.encode() + b"\n" + content for name in (kind.split(";")[0].strip().lower(), kind))
    return await idempotency(request, await principal_of(request), idempotency_key, sent, as_before)


@router.post("/{contract_id}/deliveries/import")
def import_deliveries(contract_id: UUID, app: App, principal: Annotated[Principal, permit("report_delivery")],
                      expected: ExpectedVersion, upload: Upload,
                      idem: Annotated[Idempotency | None, Depends(import_idempotency)]):
    """Imports a CSV or XLSX of deliveries; answers each row: recorded, duplicate, or refused with the reason."""
    visible_contract(app, principal, contract_id)
    written, results = app.import_deliveries(principal.actor, idem, contract_id, read_rows(*upload), expected)
    items = [{"row": r.row, "result": r.result, "reference": r.reference,
              "delivery_id": r.delivery_id, "reason": r.reason} for r in results]
    return Json({"items": items, "next_cursor": None, **tally(results)}, headers=write_headers(app, written))


@router.get("/{contract_id}/deliveries", dependencies=[Fresh])
def list_deliveries(
    contract_id: UUID, app: App, readside: ReadSideDep, principal: Annotated[Principal, permit("read_contract")],
    status: Annotated[Literal["pending", "accepted", "rejected"] | None, Query()] = None,
    month: Annotated[str | None, Query(description="YYYY-MM: only those delivered in that month")] = None,
    format: Format = "json", limit: WholeLimit = None, cursor: Cursor = None,
):
    """The contract's deliveries by reference, what a contractor reconciles its own records against;
    staff see those of cases in their scope. A rejection's reason is read one delivery at a time
    (GET .../deliveries/{delivery_id}), where showing it is recorded."""
    contract = visible_contract(app, principal, contract_id)
    if month is not None:
        check_month("month", month)
    chosen = [d for d in contract.deliveries.values()
              if status in (None, d.status) and month in (None, d.delivered_on[:7])]
    tree = app.org_tree()
    if principal.scope_prefix(tree) not in (None, NOTHING):  # scoped staff: by each case's unit
        with readside.store.read() as tx:
            units = views.org_units_of(tx, [str(d.case_id) for d in chosen])
        for case_id in {str(d.case_id) for d in chosen} - units.keys():  # a case the view has not reached
            units[case_id] = app.get_case(UUID(case_id)).org_unit
        chosen = [d for d in chosen if principal.sees_delivery(tree, units[str(d.case_id)])]
    items = [{"reference": d.reference, "id": str(d.id), "case_id": str(d.case_id), "delivered_on": d.delivered_on,
              "units": d.units, "amount": yuan(d.amount), "status": d.status,
              "statement_id": str(d.statement) if d.statement else None}
             for d in sorted(chosen, key=lambda d: d.reference)]
    page, more = paged(items, "reference", limit, cursor)
    return tabular(page, DELIVERY_COLUMNS, format, f"deliveries-{contract_id}", more, money=("amount",))


@router.get("/{contract_id}/deliveries/{delivery_id}")
def read_delivery(contract_id: UUID, delivery_id: UUID, app: App,
                  principal: Annotated[Principal, permit("read_contract")]):
    """One delivery and its review."""
    contract = visible_contract(app, principal, contract_id)
    delivery = contract.deliveries.get(delivery_id)
    if delivery is None:
        raise NotFound(f"delivery {delivery_id} not found")
    delivery_guard(app, principal, delivery_id)(app.get_case(delivery.case_id))
    return delivery_state(app, principal, contract, delivery)


@router.post("/{contract_id}/deliveries/{delivery_id}/review")
def review_delivery(contract_id: UUID, delivery_id: UUID, body: ReviewIn, app: App,
                    principal: Annotated[Principal, permit("review_delivery")], idem: Idem, expected: ExpectedVersion):
    """Accepts a delivery, or rejects it with a reason; only for a case in the reviewer's scope."""
    visible_contract(app, principal, contract_id)
    written = app.review_delivery(principal.actor, idem, contract_id, delivery_id, expected, body.accepted,
                                  body.reason, delivery_guard(app, principal, delivery_id))
    return answer(app, principal, written)


@router.post("/{contract_id}/statements", status_code=201)
def issue_statement(contract_id: UUID, body: StatementIn, app: App,
                    principal: Annotated[Principal, permit("issue_statement")], idem: Idem, expected: ExpectedVersion):
    """Freezes a payment statement for a month, from the contract as it is now (`If-Match`: its version):
    its accepted deliveries that no earlier statement lists. It pays for the whole contract, so only
    one whose scope covers every unit of the contract may issue it."""
    outside = principal.uncovered(app.org_tree(), visible_contract(app, principal, contract_id).org_units)
    if outside:
        raise HTTPException(403, f"a statement pays for the whole contract: org units {', '.join(outside)} "
                                 "are outside your scope")
    return answer(app, principal, app.issue_statement(principal.actor, idem, contract_id, body.period, expected))


@router.get("/{contract_id}/statements/{statement_id}")
def read_statement(contract_id: UUID, statement_id: UUID, app: App,
                   principal: Annotated[Principal, permit("read_statement")]):
    """The statement, byte for byte as it was issued, however much was recorded since: for the contractor,
    and for staff whose scope covers the whole contract (it lists deliveries of cases anywhere in it)."""
    contract = visible_contract(app, principal, contract_id)
    statement, document = statement_bytes(app, statement_id)
    if statement.contract_id != contract_id or not principal.sees_statement(app.org_tree(), contract.org_units):
        raise NotFound(f"statement {statement_id} not found")
    return Response(document, media_type="application/json")
