"""What a case, a client and a history entry look like to a caller.

Personal values are shown only to roles that may see them; for the others
they are withheld (null), never dropped silently from the shape.
"""

from datetime import datetime
from typing import Any

import orjson
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse

from api.access import Principal
from domain.case import ServiceCase
from domain.client import Client
from domain.clock import local
from projections.cases import LISTED
from projections.timefmt import from_micros


class Json(JSONResponse):
    """JSON as Starlette renders it (UTF-8, compact), by orjson: a case's state in 0.4 us, not 7.5;
    a city's 2,880 workload rows in 0.2 ms, not 3. What orjson refuses (an integer beyond 64 bits,
    which a step's integer field may hold) is rendered by the json module, as before."""

    def render(self, content: Any) -> bytes:
        try:
            return orjson.dumps(content, option=orjson.OPT_NON_STR_KEYS)
        except TypeError:
            return super().render(content)


_EVENT_META = ("originator_id", "originator_version", "originator_topic", "timestamp", "actor", "person", "personal")


def moment(value: datetime | None) -> str | None:
    return None if value is None else local(value).isoformat()


def shown(values: dict[str, Any], personal: bool) -> dict[str, Any]:
    """Personal values as a caller sees them: each under its name, null where withheld. The names
    say only what was recorded (findings, a note), never what it says."""
    return values if personal else dict.fromkeys(values)


def case_state(case: ServiceCase, principal: Principal) -> dict[str, Any]:
    personal = principal.sees_personal_data()
    details = {**case.details, **shown(case.personal, personal)}
    return {
        "id": str(case.id),
        "kind": case.kind,
        "client_id": str(case.client_id),
        "org_unit": case.org_unit,
        "stage": case.stage,
        "status": case.status,
        "outcome": case.outcome,
        "assignee": case.assignee,
        "version": case.version,
        "opened_at": moment(case.created_on),
        "updated_at": moment(case.modified_on),
        "due_at": moment(case.due_at),
        "service_mode": case.service_mode,
        "priority": case.priority,
        "opened_by": case.opened_by,
        "need": case.need if personal else None,
        "details": details,
        "notes": case.notes,
        "visits": case.visits,
    }


def client_state(client: Client, principal: Principal) -> dict[str, Any]:
    personal = client.personal if principal.sees_personal_data() else {}
    return {
        "id": str(client.id),
        "org_unit": client.org_unit,
        "name": personal.get("name"),
        "id_number": personal.get("id_number"),
        "phone": personal.get("phone"),
        "address": personal.get("address"),
        "version": client.version,
        "registered_at": moment(client.created_on),
        "personal_data_withheld": not principal.sees_personal_data(),
        "erased": client.erased,
    }


def visit_contact(client: Client) -> dict[str, Any]:
    """The personal fields a contractor's visit needs, and no others."""
    return {key: client.personal.get(key) for key in ("name", "phone", "address")}


def history_entry(event: ServiceCase.Event, principal: Principal) -> dict[str, Any]:
    data = {k: v for k, v in vars(event).items() if k not in _EVENT_META}
    data.update(shown(getattr(event, "personal", {}), principal.sees_personal_data()))
    return {
        "version": event.originator_version,
        "type": type(event).__name__,
        "at": moment(event.timestamp),
        "actor": event.actor,
        "data": jsonable_encoder(data),
    }


def listed_case(row: dict[str, Any]) -> dict[str, Any]:
    """A case as the case view lists it (no personal values)."""
    listed = {k: row[k] for k in LISTED}
    for field in ("opened_at", "updated_at", "due_at"):
        listed[field] = moment(from_micros(row[field]))
    return listed
