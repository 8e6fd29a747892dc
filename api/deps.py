"""Dependencies declared once: the application, the caller, permissions, headers.

Those that never wait on the store are `async def`, so that FastAPI runs them on the event loop
instead of handing each to the thread pool (a hop costs more than they do).
"""

import hashlib
import json
import re
from typing import Annotated

from fastapi import Depends, Header, HTTPException, Query, Request
from fastapi.concurrency import run_in_threadpool

from api.access import Principal
from domain.application import Idempotency, LastMeter
from domain.errors import InvalidInput

_KEY = re.compile(r"[\x21-\x7e]{1,200}")
_ETAG = re.compile(r'(W/)?"?([0-9]{1,9})"?')


async def get_lastmeter(request: Request) -> LastMeter:
    return request.app.state.lastmeter


App = Annotated[LastMeter, Depends(get_lastmeter)]


async def get_principal(request: Request, authorization: Annotated[str | None, Header()] = None) -> Principal:
    """The caller: a token checked lately is trusted without a store read (api/tokens.py), which
    also spares most requests a worker-thread hop of their own."""
    scheme, _, secret = (authorization or "").partition(" ")
    secret, principal = secret.strip(), None
    if scheme.lower() == "bearer" and secret:
        tokens = request.app.state.tokens
        principal = tokens.trusted(secret) or await run_in_threadpool(tokens.check, secret)
    if principal is None:
        raise HTTPException(401, "a valid bearer token is required", headers={"WWW-Authenticate": "Bearer"})
    return principal


def permit(action: str):
    """A dependency that lets through only roles the matrix allows for `action`."""

    async def check(principal: Annotated[Principal, Depends(get_principal)]) -> Principal:
        if not principal.may(action):
            raise HTTPException(403, f"a {principal.role} may not {action.replace('_', ' ')}")
        return principal

    check.action = action  # what the access-matrix tests read off each route
    return Depends(check)


async def get_idempotency(
    request: Request,
    principal: Annotated[Principal, Depends(get_principal)],
    idempotency_key: Annotated[str | None, Header()] = None,
) -> Idempotency | None:
    """The Idempotency-Key with a hash of what it came with (route and body)."""
    if idempotency_key is None:
        return None
    if not _KEY.fullmatch(idempotency_key):
        raise InvalidInput("Idempotency-Key", "must be 1-200 visible ASCII characters")
    body = await request.body()
    try:
        canonical = json.dumps(json.loads(body or b"null"), sort_keys=True, separators=(",", ":")).encode()
    except ValueError:
        canonical = body
    digest = hashlib.sha256(f"{request.method} {request.url.path}\n".encode() + canonical).hexdigest()
    return Idempotency(principal.user, idempotency_key, digest)


async def get_expected_version(if_match: Annotated[str | None, Header()] = None) -> int | None:
    if if_match is None or if_match.strip() == "*":
        return None
    match = _ETAG.fullmatch(if_match.strip())
    if match is None:
        raise InvalidInput("If-Match", 'must be a version as an entity tag, e.g. "3"')
    return int(match.group(2))


Idem = Annotated[Idempotency | None, Depends(get_idempotency)]
ExpectedVersion = Annotated[int | None, Depends(get_expected_version)]


async def get_backend(request: Request):
    return request.app.state.backend


async def get_readside(request: Request):
    return request.app.state.readside


async def get_settings_dep(request: Request):
    return request.app.state.settings


async def fresh(
    request: Request,
    min_position: Annotated[int | None, Query(ge=0, description="wait until the views have reached this log position")] = None,
) -> None:
    """Read-your-writes: waits (bounded) until every view has reached `min_position`. Without it, a
    read pays nothing here; with it, the waiting (which reads the store) happens in a worker thread."""
    if min_position is not None:
        await run_in_threadpool(_wait_for_views, request, min_position)


def _wait_for_views(request: Request, min_position: int) -> None:
    readside = request.app.state.readside
    if min_position > readside.projector.head():
        raise InvalidInput("min_position", "is beyond the end of the event log")
    if not readside.wait_for(min_position, request.app.state.settings.min_position_wait):
        raise HTTPException(503, f"the views have not reached position {min_position} yet",
                            headers={"Retry-After": "1"})


ReadSideDep = Annotated[object, Depends(get_readside)]
BackendDep = Annotated[object, Depends(get_backend)]
SettingsDep = Annotated[object, Depends(get_settings_dep)]
Fresh = Depends(fresh)
