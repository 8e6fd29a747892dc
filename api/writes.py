"""The answer to every write: the new state, ETag, X-Position, and Location on creation.

A replay from a receipt (or of a delivery already recorded) renders the
version that the first answer rendered, so the answer is the same.
"""

from collections.abc import Callable
from typing import Any

from fastapi.responses import Response

from api.access import Principal
from api.disclosure import disclose
from api.ledger import contract_state, delivery_state, statement_bytes
from api.render import Json, case_state, client_state
from domain.application import LastMeter, Written
from projections.eventlog import position_of

Renderer = Callable[[LastMeter, Written, Principal], tuple[Any, str]]  # → (body, location)


def _case(app: LastMeter, w: Written, principal: Principal) -> tuple[Any, str]:
    state = w.state if w.state is not None else app.get_case(w.id, w.version)
    if not w.disclosed:
        disclose(app, principal, state.client_id, "case", w.id)
    return case_state(state, principal), f"/v1/cases/{w.id}"


def _client(app: LastMeter, w: Written, principal: Principal) -> tuple[Any, str]:
    state = w.state if w.state is not None else app.get_client(w.id, w.version)
    if not w.disclosed:
        disclose(app, principal, w.id, "client", w.id)
    return client_state(state, principal), f"/v1/clients/{w.id}"


def _contract(app: LastMeter, w: Written, _: Principal) -> tuple[Any, str]:
    state = w.state if w.state is not None else app.get_contract(w.id, w.version)
    return contract_state(state), f"/v1/contracts/{w.id}"


def _delivery(app: LastMeter, w: Written, principal: Principal) -> tuple[Any, str]:
    contract = w.state if w.state is not None else app.get_contract(w.id, w.version)
    state = delivery_state(app, principal, contract, contract.deliveries[w.item], recorded=w.replayed)
    return state, f"/v1/contracts/{w.id}/deliveries/{w.item}"


def _statement(app: LastMeter, w: Written, _: Principal) -> tuple[Any, str]:
    statement, document = statement_bytes(app, w.id)
    path = f"/v1/contracts/{statement.contract_id}/statements/{w.id}"
    return Response(document, media_type="application/json"), path


def write_headers(app: LastMeter, written: Written) -> dict[str, str]:
    """ETag and X-Position of what was written (looked up for a replay), and whether it is one."""
    position = written.position
    if position is None:
        position = position_of(app.recorder, written.id, written.version)
    headers = {"ETag": f'"{written.version}"', "X-Position": str(position)}
    if written.replayed:
        headers["Idempotent-Replayed"] = "true"
    return headers


RENDERERS: dict[str, Renderer] = {
    "case": _case, "client": _client, "contract": _contract, "delivery": _delivery, "statement": _statement,
}


def answer(app: LastMeter, principal: Principal, written: Written) -> Response:
    body, location = RENDERERS[written.resource](app, written, principal)
    headers = write_headers(app, written)
    if written.status == 201:
        headers["Location"] = location
    if isinstance(body, Response):
        body.status_code = written.status
        body.headers.update(headers)
        return body
    return Json(body, status_code=written.status, headers=headers)
