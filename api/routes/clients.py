"""Persons served (clients): registration and reading, personal fields by role."""

from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, HTTPException

from api.access import Principal
from api.deps import App, Idem, permit
from api.render import client_state
from api.schemas import ClientIn
from api.writes import answer
from domain.errors import NotFound

router = APIRouter(prefix="/v1/clients", tags=["clients"])


@router.post("", status_code=201)
def register_client(body: ClientIn, app: App, idem: Idem,
                    principal: Annotated[Principal, permit("register_client")]):
    """Registers a person with their identity (personal data, encrypted per person)."""
    app.check_org_unit("org_unit", body.org_unit)
    if not principal.covers(app.org_tree(), body.org_unit):
        raise HTTPException(403, f"org unit {body.org_unit} is outside your scope")
    return answer(app, principal, app.register_client(principal.actor, idem, **body.model_dump()))


@router.get("/{client_id}")
def read_client(client_id: UUID, app: App, principal: Annotated[Principal, permit("read_client")]):
    """A person; name, ID number, phone and address only for roles that may see them."""
    client = app.get_client(client_id)
    if not principal.covers(app.org_tree(), client.org_unit):
        raise NotFound(f"client {client_id} not found")
    return client_state(client, principal)
