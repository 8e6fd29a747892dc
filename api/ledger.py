"""What a contract, its ledger, a delivery and a payment statement look like to a caller.

Money is yuan as a decimal string with two places. A statement is rendered
from the contract's version it was frozen at, as canonical JSON, so the same
statement is the same bytes however much was recorded since.
"""

import json
from decimal import Decimal
from typing import Any
from uuid import UUID

from api.access import Principal
from api.disclosure import disclose, shown_personal_data
from api.render import moment
from domain.application import LastMeter
from domain.contract import ACCEPTED, PENDING, REJECTED, Contract, Delivery, PaymentStatement
from projections.eventlog import position_of


def yuan(amount: Decimal) -> str:
    return str(amount.quantize(Decimal("0.01")))


def contract_state(contract: Contract) -> dict[str, Any]:
    figures = {
        "delivered": contract.total(PENDING, ACCEPTED, REJECTED),
        "accepted": contract.total(ACCEPTED),
        "rejected": contract.total(REJECTED),
        "pending": contract.total(PENDING),
    }
    state = {
        "id": str(contract.id), "provider": contract.provider, "service_kind": contract.service_kind,
        "unit": contract.unit, "unit_price": yuan(contract.unit_price), "budget": yuan(contract.budget),
        "starts_on": contract.starts_on, "ends_on": contract.ends_on, "org_units": contract.org_units,
        "version": contract.version, "created_at": moment(contract.created_on),
    }
    for name, (units, amount) in figures.items():
        state[name] = yuan(amount)
        state[f"{name}_units"] = units
    state["remaining"] = yuan(contract.remaining)
    return state


def delivery_state(app: LastMeter, principal: Principal, contract: Contract, delivery: Delivery,
                   recorded: bool = False) -> dict[str, Any]:
    """`recorded`: the answer was given before (a replay from its receipt), and its read recorded then."""
    return {
        "id": str(delivery.id), "contract_id": str(contract.id), "case_id": str(delivery.case_id),
        "delivered_on": delivery.delivered_on, "units": delivery.units, "reference": delivery.reference,
        "amount": yuan(delivery.amount), "status": delivery.status,
        "reason": disclosed_reason(app, principal, delivery, recorded),
    }


def disclosed_reason(app: LastMeter, principal: Principal, delivery: Delivery, recorded: bool = False) -> str | None:
    """Why the delivery was rejected, recorded as a disclosure (unless `recorded` already): for callers
    shown personal values (the contractor it was written for among them), and for no one once the
    person it may speak of was erased (a copy of the contract cached before the erasure still holds it)."""
    if delivery.reason is None or not shown_personal_data(principal):
        return None
    person = person_served(app, delivery)
    if app.was_erased(person):
        return None
    if not recorded:
        disclose(app, principal, person, "delivery", delivery.id)
    return delivery.reason


def person_served(app: LastMeter, delivery: Delivery) -> UUID:
    """Whom the delivery served: a rejection before reasons were sealed (version 1) names no one."""
    return delivery.person or app.get_case(delivery.case_id).client_id


def statement_bytes(app: LastMeter, statement_id: UUID) -> tuple[PaymentStatement, bytes]:
    """A statement as issued: from the contract's version it names, at that version's log position."""
    statement, contract = app.get_statement_by_id(statement_id)
    position = position_of(app.recorder, contract.id, statement.contract_version)
    return statement, canonical_json(statement_document(statement, contract, position))


def statement_document(statement: PaymentStatement, contract: Contract, position: int) -> dict[str, Any]:
    payable = sorted((d for d in contract.deliveries.values() if statement.lists(d)),
                     key=lambda d: (d.delivered_on, d.reference))
    follows = {} if statement.follows is None else {"follows": [str(s) for s in statement.follows]}
    return {**follows,
        "id": str(statement.id), "contract_id": str(contract.id), "provider": contract.provider,
        "period": statement.period, "frozen_at_position": position,
        "contract_version": statement.contract_version, "issued_at": moment(statement.created_on),
        "issued_by": statement.issued_by, "unit": contract.unit, "unit_price": yuan(contract.unit_price),
        "lines": [{"delivery_id": str(d.id), "reference": d.reference, "case_id": str(d.case_id),
                   "delivered_on": d.delivered_on, "units": d.units, "amount": yuan(d.amount)} for d in payable],
        "total_units": sum(d.units for d in payable),
        "total": yuan(sum((d.amount for d in payable), Decimal("0.00"))),
    }


def canonical_json(document: dict[str, Any]) -> bytes:
    return json.dumps(document, ensure_ascii=False, sort_keys=True, separators=(",", ":")).encode()
