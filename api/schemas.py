"""Request bodies. Shapes are checked here; the domain checks meaning (ID check digits, codes, stages)."""

from datetime import datetime
from uuid import UUID

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field


class Body(BaseModel):
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
    priority: str = Field(default="normal", description="normal, high or urgent")


class AssignmentIn(Body):
    assignee: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._-]+$",
                          description="the staff user id of the new assignee")


class NoteIn(Body):
    text: str = Field(min_length=1, max_length=4000)


class VisitIn(Body):
    mode: str = Field(description="centralised, door_to_door or proxy")
    visited_at: AwareDatetime
    summary: str = Field(min_length=1, max_length=4000)


class ReasonIn(Body):
    reason: str = Field(min_length=1, max_length=4000)


class ClosureIn(Body):
    outcome: str = Field(description="served, withdrawn, refused or transferred")
    reason: str | None = Field(default=None, min_length=1, max_length=4000)


class PastMoment(Body):
    as_of: datetime
