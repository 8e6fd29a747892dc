"""Persons served (clients): registration and reading, personal fields by role."""

from dataclasses import replace
from typing import Annotated
from uuid import UUID

from fastapi import APIRouter

from api.access import Principal
from api.deps import App, BackendDep, ExpectedVersion, Idem, check_placed_in_scope, permit
from api.disclosure import answering, disclose
from api.render import client_state
from api.schemas import ClientIn, ErasureIn
from api.writes import answer
from domain.application import LastMeter
from domain.client import Client
from domain.errors import NotFound

router = APIRouter(prefix="/v1/clients", tags=["clients"])


@router.post("", status_code=201)
def register_client(body: ClientIn, app: App, principal: Annotated[Principal, permit("register_client")],
                    idem: Idem):
    """Registers a person with their identity (personal data, encrypted per person); 409 naming the
    client when a person with the same ID number is registered in the caller's scope already. One
    registered outside it (someone who moved) is neither revealed nor in the way."""
    check_placed_in_scope(app, principal, "org_unit", body.org_unit)
    tree = app.org_tree()
    with answering(principal):
        written = app.register_client(principal.actor, idem, duplicates=lambda c: principal.covers(tree, c.org_unit),
                                      **body.model_dump())
    return answer(app, principal, written)


@router.get("/{client_id}")
def read_client(client_id: UUID, app: App, principal: Annotated[Principal, permit("read_client")]):
    """A person; name, ID number, phone and address only for roles that may see them."""
    client = client_in_scope(app, principal, client_id)
    disclose(app, principal, client_id, "client", client_id)
    return client_state(client, principal)


@router.post("/{client_id}/erasure")
def erase_client(client_id: UUID, body: ErasureIn, app: App, backend: BackendDep,
                 principal: Annotated[Principal, permit("erase_client")], idem: Idem, expected: ExpectedVersion):
    """Erases a person's personal data (PIPL): their key is destroyed, so every value sealed with it,
    in every event, reads as erased; case facts that are not personal remain."""
    client_in_scope(app, principal, client_id)
    # Once the erasure is recorded the key goes; also when it was recorded before, by an erasure cut short.
    with backend.keys.erasing(client_id, lambda person: app.get_client(person).erased):
        written = app.erase_client(principal.actor, idem, client_id, body.reason, expected)
    app.forget_cached(client_id)
    # The client as saved still holds the values its key opened; the answer reads it again, without them.
    return answer(app, principal, replace(written, state=None))


def client_in_scope(app: LastMeter, principal: Principal, client_id: UUID) -> Client:
    client = app.get_client(client_id)
    if not principal.covers(app.org_tree(), client.org_unit):
        raise NotFound(f"client {client_id} not found")
    return client
