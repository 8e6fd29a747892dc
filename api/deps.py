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
from fastapi.security import HTTPBearer

from api.access import Principal
from domain.application import Idempotency, LastMeter
from domain.errors import InvalidInput, a_or_an

_KEY = re.compile(r"[\x21-\x7e]{1,200}")
# An entity tag, weak too (a proxy may weaken it), or a bare version; any version a store can hold (one not
# current is 412), but never with one quote: "1 is no tag, nor a version.
_ETAG = re.compile(r'(?:W/)?"([0-9]{1,18})"|([0-9]{1,18})')


async def get_lastmeter(request: Request) -> LastMeter:
    return request.app.state.lastmeter


App = Annotated[LastMeter, Depends(get_lastmeter)]


PRINCIPAL = "lastmeter.principal"  # where a request keeps its caller once resolved


async def principal_of(request: Request) -> Principal:
    """The caller, resolved once per request: a token checked lately is trusted without a store read
    (api/tokens.py), which also spares most requests a worker-thread hop of their own."""
    principal = request.scope.get(PRINCIPAL)
    if principal is None:
        scheme, _, secret = request.headers.get("authorization", "").partition(" ")
        secret = secret.strip()
        if scheme.lower() == "bearer" and secret:
            tokens = request.app.state.tokens
            principal = tokens.trusted(secret) or await run_in_threadpool(tokens.check, secret)
        if principal is None:
            raise HTTPException(401, "a valid bearer token is required", headers={"WWW-Authenticate": "Bearer"})
        request.scope[PRINCIPAL] = principal
    return principal


class Permit(HTTPBearer):
    """Lets through only the roles the matrix allows for `action`; to OpenAPI, the bearer scheme.

    A route's permission is one dependency that reads the header itself: FastAPI solves every node of
    a dependency tree on every request, even one whose value it has cached, and the tree of a caller
    behind a header behind a permission cost more than the command it guarded.
    """

    def __init__(self, action: str):
        super().__init__(scheme_name="bearer", auto_error=False)
        self.action = action  # what the access-matrix tests read off each route

    async def __call__(self, request: Request) -> Principal:
        principal = await principal_of(request)
        if not principal.may(self.action):
            raise HTTPException(403, f"{a_or_an(principal.role)} may not {self.action.replace('_', ' ')}")
        return principal


def permit(action: str):
    """A dependency that lets through only roles the matrix allows for `action`."""
    return Depends(Permit(action))


def check_placed_in_scope(app: LastMeter, principal: Principal, field: str, unit: str) -> None:
    """The org unit something new is placed in: 422 naming `field` if the tree has no such unit, 403
    if it lies outside the caller's scope."""
    app.check_org_unit(field, unit)
    if not principal.covers(app.org_tree(), unit):
        raise HTTPException(403, f"org unit {unit} is outside your scope")


IdempotencyKey = Annotated[str | None, Header(description="makes the command safe to retry: the same key "
                                                         "with the same body answers as the first time")]
IfMatch = Annotated[str | None, Header(description='the version the command expects, e.g. "3"')]


async def idempotency(request: Request, principal: Principal, key: str | None,
                      sent: bytes | None = None, sent_before: bytes | None = None) -> Idempotency | None:
    """The Idempotency-Key with a keyed fingerprint of what it came with: the route and what was
    sent (by default the body, canonical where it is JSON); `sent_before`, what a receipt stored
    before an upgrade may have taken as sent instead."""
    if key is None:
        return None
    if not _KEY.fullmatch(key):
        raise InvalidInput("Idempotency-Key", "must be 1-200 visible ASCII characters")
    # The body is also what receipts stored before fingerprints were keyed hashed; an upload's form,
    # once parsed, cannot be read again (and its boundary made every send differ anyway).
    form_parsed = sent is not None and request.headers.get("content-type", "").startswith("multipart/")
    body = None if form_parsed else canonical_body(await request.body())
    request_line = f"{request.method} {request.url.path}\n".encode()
    keys = request.app.state.backend.keys
    fingerprint = keys.fingerprint(request_line + (body if sent is None else sent))
    earlier = [hashlib.sha256(request_line + body).hexdigest()] if body is not None else []
    if sent_before is not None and sent_before != sent:
        earlier.append(keys.fingerprint(request_line + sent_before))
    return Idempotency(principal.user, key, fingerprint, tuple(earlier), principal.role, keys.fingerprint(request_line))


def canonical_body(body: bytes) -> bytes:
    """A JSON body with its keys sorted and no spaces, so that a retry that spaces or orders the same
    document otherwise is the same request; any other body as it came."""
    try:
        return json.dumps(json.loads(body or b"null"), sort_keys=True, separators=(",", ":")).encode()
    except (ValueError, RecursionError):  # not JSON, or nested deeper than the parser goes
        return body


def expected_version(if_match: str | None) -> int | None:
    if if_match is None or if_match.strip() == "*":
        return None
    match = _ETAG.fullmatch(if_match.strip())
    if match is None:
        raise InvalidInput("If-Match", 'must be a version as an entity tag, e.g. "3"')
    return int(match.group(1) or match.group(2))


async def get_idempotency(request: Request, idempotency_key: IdempotencyKey = None) -> Idempotency | None:
    return await idempotency(request, await principal_of(request), idempotency_key)


async def get_expected_version(if_match: IfMatch = None) -> int | None:
    return expected_version(if_match)


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
    read pays nothing here; with it, the waiting (which reads the store) happens in a worker thread.
    A route's own dependencies run before its parameters' (its permission): the caller is known
    first, so that no one without a token waits, or learns where the log ends."""
    if min_position is not None:
        await principal_of(request)
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
# The paging of a list made whole per request (api.paging.paged): every list takes limit and cursor.
WholeLimit = Annotated[int | None, Query(ge=1, le=10_000, description="at most this many items (default: all)")]
Cursor = Annotated[str | None, Query(description="the next_cursor of the page before")]
