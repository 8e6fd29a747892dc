"""What /openapi.json tells client developers beyond what FastAPI infers from the routes.

FastAPI describes a 422 by its own validation-error shape and no other error at all; lastmeter answers
every error as application/problem+json (api/problems.py) with the statuses of the contract, and
every write with headers that clients rely on (ETag, X-Position, Location). An import's body is read
by the route itself, so FastAPI cannot see which types it takes.
"""

from collections.abc import Iterable
from typing import Any

from fastapi import APIRouter, FastAPI
from fastapi.routing import APIRoute

from api.access import EVERYONE, MATRIX
from api.problems import PROBLEM, permits
from api.spreadsheet import XLSX

PROBLEM_SCHEMA = {
    "type": "object",
    "required": ["type", "title", "status", "detail"],
    "properties": {
        "type": {"type": "string", "format": "uri"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "errors": {"type": "array", "description": "422: each field refused and why",
                   "items": {"type": "object", "required": ["field", "reason"],
                             "properties": {"field": {"type": "string"}, "reason": {"type": "string"}}}},
        "current_version": {"type": "integer", "description": "412: the version that is current"},
    },
}
ERRORS = {
    "401": "no valid bearer token",
    "403": "the caller's role may not do this",
    "404": "not found, or outside the caller's scope (its existence is not revealed)",
    "409": "a rule of the domain refuses the command in the resource's present state",
    "412": "If-Match names a version that is no longer current",
    "413": "the body is larger than 1 MB (an uploaded file, 20 MB)",
    "422": "invalid input: `errors` names each field and why",
    "503": "the store does not answer, the server is not ready, the views have not reached min_position "
           "yet, or the command kept losing races: retry after Retry-After (a command sent without an "
           "Idempotency-Key is told none: it may have been recorded)",
}
WRITE_HEADERS = {
    "ETag": 'the version written, e.g. "3"',
    "X-Position": "the event-store position of the last event written (for min_position)",
    "Idempotent-Replayed": "true when a repeat under the same Idempotency-Key answers the first answer",
}
IMPORTED = {
    "text/csv": {"schema": {"type": "string", "format": "binary"}},
    XLSX: {"schema": {"type": "string", "format": "binary"}},
    "multipart/form-data": {"schema": {"type": "object", "required": ["file"],
                                       "properties": {"file": {"type": "string", "format": "binary"}}}},
}
IMPORT_PATH = "/v1/contracts/{contract_id}/deliveries/import"
SPREADSHEETS = {  # what a list answers with ?format=csv or xlsx
    "text/csv": {"schema": {"type": "string"}},
    XLSX: {"schema": {"type": "string", "format": "binary"}},
}


def install(app: FastAPI, routers: Iterable[APIRouter]) -> None:
    inferred = app.openapi
    refusable = refusing_some_roles(routers)
    described: list[dict] = []  # the spec last described (FastAPI makes it once, and again if routes change)

    def openapi() -> dict[str, Any]:
        spec = inferred()
        if not described or described[0] is not spec:
            described[:] = [describe(spec, refusable)]
        return spec

    app.openapi = openapi


def refusing_some_roles(routers: Iterable[APIRouter]) -> set[tuple[str, str]]:
    """The operations (path, method) whose permission refuses some role: only those can answer 403."""
    return {(route.path, method.lower())
            for router in routers for route in router.routes if isinstance(route, APIRoute)
            if any(MATRIX[permit.action] < EVERYONE for permit in permits(route.dependant.dependencies))
            for method in route.methods}


def describe(spec: dict[str, Any], refusable: set[tuple[str, str]]) -> dict[str, Any]:
    schemas = spec.setdefault("components", {}).setdefault("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)
    schemas["Problem"] = PROBLEM_SCHEMA
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            _errors(path, method, operation, (path, method) in refusable)
            if method == "post":
                _write_headers(operation["responses"])
            if any(p["name"] == "format" for p in operation.get("parameters", [])):
                listed = operation["responses"]["200"]
                listed["content"] = {**listed.get("content", {}), **SPREADSHEETS}
                listed["headers"] = {"X-Next-Cursor": {"description": "a CSV or XLSX page's next_cursor",
                                                       "schema": {"type": "string"}}}
    if IMPORT_PATH in spec["paths"]:
        spec["paths"][IMPORT_PATH]["post"]["requestBody"] = {
            "required": True, "content": IMPORTED,
            "description": "a CSV or XLSX of deliveries (case_id, delivered_on, units, reference, or 案件编号, "
                           "服务日期, 数量, 报告编号), as the body or the multipart field `file`",
        }
    return spec


def _errors(path: str, method: str, operation: dict[str, Any], refusable: bool) -> None:
    statuses = []
    if "security" in operation:
        statuses.append("401")
    if refusable:
        statuses.append("403")
    if "{" in path:
        statuses.append("404")
    if method == "post" and "security" in operation:
        statuses.append("409")
    if any(p["name"] == "if-match" for p in operation.get("parameters", [])):
        statuses.append("412")
    if method == "post" and ("requestBody" in operation or path == IMPORT_PATH):
        statuses.append("413")
    if operation.get("parameters") or "requestBody" in operation or path == IMPORT_PATH:
        statuses.append("422")
    if path == "/readyz" or "security" in operation:  # every route behind a token may have to ask the store
        statuses.append("503")
    responses = operation["responses"]
    for status in statuses:
        responses[status] = {"description": ERRORS[status],
                             "content": {PROBLEM: {"schema": {"$ref": "#/components/schemas/Problem"}}}}


def _write_headers(responses: dict[str, Any]) -> None:
    for status, response in responses.items():
        if status.startswith("2"):
            headers = {name: {"description": text, "schema": {"type": "string"}} for name, text in WRITE_HEADERS.items()}
            if status == "201":
                headers["Location"] = {"description": "where the resource created is read", "schema": {"type": "string"}}
            response["headers"] = headers
