"""Request bodies. Shapes are checked here; the domain checks meaning (ID check digits, codes, stages)."""

import re
from datetime import date
from typing import Annotated
from uuid import UUID

from pydantic import AwareDatetime, BaseModel, BeforeValidator, ConfigDict, Field, StrictBool, StrictInt
from pydantic_core import PydanticCustomError

from domain.actor import STAFF_ID
from domain.clock import DAY
from domain.client import ERASURE_GROUNDS


# Days and moments begin as ISO 8601 writes them (2026-03-01, 2026-03-01T09:30): pydantic reads a
# number, or text of digits only (0, "1700000000", "20261120"), as seconds since 1970.
_ISO_MOMENT = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}")


def _day_as_text(value: object) -> object:
    """A day, or a moment at its midnight as some clients write days (2026-03-01T00:00:00Z)."""
    if isinstance(value, str) and DAY.match(value.strip()):
        return value.strip()
    raise PydanticCustomError("date_text", "must be a date as YYYY-MM-DD")


def _moment_as_text(value: object) -> object:
    if isinstance(value, str) and _ISO_MOMENT.match(value.strip()):
        return value.strip()
    raise PydanticCustomError("datetime_text", "must be an ISO 8601 date-time with an offset, e.g. "
                                               "2026-03-01T09:30:00+08:00")


Day = Annotated[date, BeforeValidator(_day_as_text)]
Moment = Annotated[AwareDatetime, BeforeValidator(_moment_as_text)]


class Body(BaseModel):
    """Counts and yes/no answers are StrictInt and StrictBool, JSON's own types: pydantic would
    otherwise read "yes" or 1 as true and true as 1 unit, and a payment must not rest on such a guess."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class ClientIn(Body):
    name: str = Field(min_length=1, max_length=100)
    id_number: str
    phone: str
    address: str | None = Field(default=None, max_length=300)
    org_unit: str


class CaseIn(Body):
    kind: str
    client_id: UUID
    org_unit: str
    need: str = Field(min_length=1, max_length=4000, description="the need, as recorded in the needs list")
    service_mode: str | None = Field(default=None, description="centralised, door_to_door or proxy")
    priority: str | None = Field(default=None, description="normal (the default, also for null), high or urgent")


class AssignmentIn(Body):
    assignee: str = Field(pattern=STAFF_ID.pattern, description="the staff user id of the new assignee "
                                                                "(as tokens name users)")


class NoteIn(Body):
    text: str = Field(min_length=1, max_length=4000)


class VisitIn(Body):
    mode: str = Field(description="centralised, door_to_door or proxy")
    visited_at: Moment
    summary: str = Field(min_length=1, max_length=4000)


class ReasonIn(Body):
    reason: str | None = Field(default=None, min_length=1, max_length=4000,
                               description="required, unless the person's data was erased: then none")


class ClosureIn(Body):
    outcome: str = Field(description="served, withdrawn, refused or transferred")
    reason: str | None = Field(default=None, min_length=1, max_length=4000)


class ErasureIn(Body):
    reason: str = Field(description="the lawful ground (PIPL art. 47): " + ", ".join(ERASURE_GROUNDS))


class ReferralIn(Body):
    contract_id: UUID


class ContractIn(Body):
    provider: str = Field(description="the provider's id, as contractor tokens name it")
    service_kind: str = Field(description="the case kind the contract serves")
    unit: str = Field(description="session, hour, household or device")
    unit_price: str = Field(description='yuan per unit, e.g. "120.00"')
    budget: str = Field(description='yuan, e.g. "50000.00"')
    starts_on: Day
    ends_on: Day
    org_units: list[str] = Field(min_length=1, max_length=5000)


class DeliveryIn(Body):
    case_id: UUID
    delivered_on: Day
    units: StrictInt = Field(ge=1, le=100_000)
    reference: str = Field(min_length=1, max_length=64, description="the contractor's own report reference")


class ReviewIn(Body):
    accepted: StrictBool
    reason: str | None = Field(default=None, min_length=1, max_length=2000,
                               description="why it is rejected: required with a rejection, 422 with an acceptance")


class StatementIn(Body):
    period: str = Field(description="YYYY-MM")
