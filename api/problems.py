"""Every error answers application/problem+json (RFC 9457), mapped here, in one place."""

import json
import logging
import sqlite3
from collections.abc import Iterator
from typing import Any

import eventsourcing.persistence as persistence
import psycopg
from fastapi import FastAPI, Request
from fastapi.dependencies.models import Dependant
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from api.deps import Permit
from api.metrics import route_of
from domain.errors import CommandRefused, Contention, InvalidInput, NotFound, StaleVersion

log = logging.getLogger("lastmeter.api")
PROBLEM = "application/problem+json"


class ProblemResponse(JSONResponse):
    media_type = PROBLEM

    def render(self, content: Any) -> bytes:
        # ASCII-escaped, so that even a lone surrogate a client sent can be named back to it.
        return json.dumps(content, ensure_ascii=True, separators=(",", ":")).encode()


def problem(status: int, title: str, detail: str, headers: dict | None = None, **extra: Any) -> JSONResponse:
    body = {"type": f"https://lastmeter.example/problems/{title.lower().replace(' ', '-')}",
            "title": title, "status": status, "detail": detail, **extra}
    return ProblemResponse(body, status_code=status, headers=headers)


def _field(error: dict) -> str:
    if error["type"] == "json_invalid":
        return "body"
    loc = tuple(error["loc"])
    parts = [p for p in loc if p not in ("body", "query", "path", "header")]
    # an item of a list as the domain names it too: org_units[0], not org_units.0
    named = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in parts).removeprefix(".")
    return named or str(loc[-1] if loc else "body")


def _media_type(request: Request) -> str:
    """The Content-Type the body was sent with, without its parameters, in lower case ("" for none)."""
    return request.headers.get("content-type", "").partition(";")[0].strip().lower()


def _reason(error: dict, request: Request) -> str:
    """pydantic's message, but for a body that is no JSON object because it was not sent as JSON (a
    browser's fetch sends a string as text/plain): FastAPI then validates its bytes, and pydantic
    says only that they are no object."""
    sent = _media_type(request)
    if tuple(error["loc"]) == ("body",) and not (sent.startswith("application/") and sent.endswith(("/json", "+json"))):
        return f"must be a JSON object sent as Content-Type: application/json (it came as {sent or 'none'})"
    return error["msg"]


async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
    if any(e["type"] == "json_invalid" for e in exc.errors()):
        # FastAPI parses a JSON body before it runs any dependency: the caller is checked here, so
        # that a malformed body from someone without a valid token is 401 (403 for a role refused).
        refusal = await refused_caller(request)
        if refusal is not None:
            return refusal
    errors = [{"field": _field(e), "reason": _reason(e, request)} for e in exc.errors()]
    first = errors[0] if errors else {"field": "body", "reason": "is invalid"}
    return problem(422, "Invalid input", f"{first['field']}: {first['reason']}", errors=errors)


async def refused_caller(request: Request) -> JSONResponse | None:
    """The answer the route's permission would have given the caller, if it refuses them."""
    dependant = getattr(request.scope.get("route"), "dependant", None)
    for permit in permits(dependant.dependencies if dependant else []):
        try:
            await permit(request)
        except HTTPException as refusal:  # 401 or 403
            return await http_error(request, refusal)
    return None


def permits(dependencies: list[Dependant]) -> Iterator[Permit]:
    """The permissions among a route's dependencies, however deep (a case command's is in its parts)."""
    for dependency in dependencies:
        if isinstance(dependency.call, Permit):
            yield dependency.call
        yield from permits(dependency.dependencies)


async def invalid_input(_: Request, exc: InvalidInput) -> JSONResponse:
    return problem(422, "Invalid input", f"{exc.field}: {exc.reason}",
                   errors=[{"field": exc.field, "reason": exc.reason}])


async def refused(_: Request, exc: CommandRefused) -> JSONResponse:
    return problem(409, "Command refused", str(exc))


async def stale(_: Request, exc: StaleVersion) -> JSONResponse:
    return problem(412, "Stale version", str(exc), headers={"ETag": f'"{exc.current}"'}, current_version=exc.current)


async def not_found(_: Request, exc: NotFound) -> JSONResponse:
    return problem(404, "Not found", str(exc))


async def contention(_: Request, exc: Contention) -> JSONResponse:
    return problem(503, "Busy", str(exc), headers={"Retry-After": "1"})


# The errors among which a store says it cannot answer now, though the request was not wrong and may
# succeed in a moment (store_unavailable tells them from the faults among them).
UNREACHABLE = (persistence.OperationalError, persistence.InterfaceError, psycopg.OperationalError,
               psycopg.InterfaceError, sqlite3.OperationalError)
SQLITE_BUSY, SQLITE_LOCKED = 5, 6
# PostgreSQL's: a connection lost or refused, a transaction to roll back and retry (serialization,
# deadlock), too many connections, a lock not available, the server shutting down or starting.
PASSING = ("08", "40", "53300", "55P03", "57P01", "57P02", "57P03")


def store_unavailable(exc: BaseException | None) -> bool:
    """Whether `exc` says the store could not answer now, not that something is wrong that a retry
    would meet again (a statement too complex, a fault of the code)."""
    while isinstance(exc, (persistence.OperationalError, persistence.InterfaceError)):
        exc = exc.__cause__  # the library's wrap the driver's; one of its own, with no cause, is a fault
    if isinstance(exc, sqlite3.OperationalError):
        return (getattr(exc, "sqlite_errorcode", 0) & 0xFF) in (SQLITE_BUSY, SQLITE_LOCKED)
    if isinstance(exc, psycopg.InterfaceError):  # a connection already closed
        return True
    if isinstance(exc, psycopg.OperationalError):  # no state: the client's side lost or got no connection
        return exc.sqlstate is None or exc.sqlstate.startswith(PASSING)
    return False


async def unavailable(request: Request, exc: Exception) -> JSONResponse:
    """503: PostgreSQL restarting, a connection it dropped, no pooled connection in time, SQLite busy.
    A command that was running may have been recorded all the same: under its Idempotency-Key, sent
    again, it is answered as the first time; without one, the client is told to look before it sends."""
    if not store_unavailable(exc):
        raise exc  # a fault: answered (and logged with its traceback) as every other one is
    log.warning("the store did not answer (%s) on %s %s", type(exc).__name__, request.method, route_of(request.scope))
    if request.method in ("GET", "HEAD") or "idempotency-key" in request.headers:
        return problem(503, "Store unavailable", "the store did not answer; try again in a moment (a command sent "
                       "again with the same Idempotency-Key is recorded once)", headers={"Retry-After": "1"})
    return problem(503, "Store unavailable", "the store did not answer; the command may have been recorded: read "
                   "what it changes before sending it again (an Idempotency-Key makes a command safe to resend)")


async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
    if exc.status_code == 400:  # a body the server could not parse at all is invalid input too
        form = _media_type(request).startswith("multipart/")
        reason = "is not a readable multipart form" if form else "is not JSON in UTF-8"
        return await refused_caller(request) or problem(
            422, "Invalid input", f"body: {reason}", errors=[{"field": "body", "reason": reason}])
    titles = {401: "Unauthorized", 403: "Forbidden", 404: "Not found", 405: "Method not allowed",
              406: "Not acceptable", 413: "Content too large", 415: "Unsupported media type",
              503: "Service unavailable"}
    return problem(exc.status_code, titles.get(exc.status_code, "Error"), str(exc.detail), headers=exc.headers)


async def server_fault(request: Request, exc: Exception) -> JSONResponse:
    # Only the exception's type and the route's template: messages and paths may carry identifiers.
    log.error("unhandled %s on %s %s", type(exc).__name__, request.method, route_of(request.scope))
    return problem(500, "Server error", "the server failed; the request may be retried")


def install(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, invalid_request)
    app.add_exception_handler(InvalidInput, invalid_input)
    app.add_exception_handler(CommandRefused, refused)
    app.add_exception_handler(StaleVersion, stale)
    app.add_exception_handler(NotFound, not_found)
    app.add_exception_handler(Contention, contention)
    app.add_exception_handler(HTTPException, http_error)
    for unreachable in UNREACHABLE:
        app.add_exception_handler(unreachable, unavailable)
    app.add_exception_handler(Exception, server_fault)
