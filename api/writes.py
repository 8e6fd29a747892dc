"""The answer to every write: the new state, ETag, X-Position, and Location on creation."""

from collections.abc import Callable
from typing import Any

from fastapi.responses import JSONResponse

from api.access import Principal
from api.render import case_state, client_state
from domain.application import LastMeter, Written
from projections.eventlog import position_of

_RESOURCES: dict[str, tuple[str, Callable[..., Any], Callable[..., Any]]] = {
    "case": ("/v1/cases", LastMeter.get_case, case_state),
    "client": ("/v1/clients", LastMeter.get_client, client_state),
}


def answer(app: LastMeter, principal: Principal, written: Written) -> JSONResponse:
    """Renders what a command wrote; a replay from a receipt renders the same version again."""
    path, load, render = _RESOURCES[written.resource]
    state = written.state if written.state is not None else load(app, written.id, written.version)
    position = written.position
    if position is None:
        position = position_of(app.recorder, written.id, written.version)
    headers = {"ETag": f'"{written.version}"', "X-Position": str(position)}
    if written.status == 201:
        headers["Location"] = f"{path}/{written.id}"
    if written.replayed:
        headers["Idempotent-Replayed"] = "true"
    return JSONResponse(render(state, principal), status_code=written.status, headers=headers)
