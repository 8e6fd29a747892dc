"""The floor bench/http.py measures beside `lastmeter serve`: the least a server keeping these commands
can do on this stack, served by uvicorn the same way.

It answers the routes of the benchmark's mix (a note, an assignment, a case read, an open) as
lastmeter's do, from the caller's side: a bearer token checked against its hash, a JSON body
validated by a pydantic model, and one round trip to PostgreSQL: a command is one row inserted and
committed before the answer (the log position in X-Position; an open, its case and its log entry
in one statement), a read one row selected by its key.
Nothing else: no aggregate, no concurrency check, no encryption, no idempotency, no audit of the
read, no projection, no metrics (uvicorn's own access log, as the trivial endpoint has). What
lastmeter does beyond that is its own cost; what this floor costs beyond the trivial endpoint is the
stack's, and no implementation on it goes below.

    BENCH_FLOOR_DATABASE_URL=... BENCH_FLOOR_SCHEMA=... BENCH_FLOOR_TOKENS=secret1,secret2 \
        .venv/bin/python -m uvicorn bench.floor_app:app --host 127.0.0.1 --port 8002

The schema's two tables are made by `create_tables` (bench/http.py does it, with the cases seeded).
"""

import hashlib
import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated

from fastapi import Depends, FastAPI, HTTPException, Request, Response
from psycopg.sql import SQL, Identifier
from psycopg_pool import ConnectionPool
from pydantic import BaseModel, Field

POOL_SIZE = 10  # lastmeter's default LASTMETER_POSTGRES_POOL_SIZE


def create_tables(conn, schema: str, case_ids: list[str]) -> None:
    """The floor's log and its cases, in `schema`; the cases the benchmark's clients act on seeded."""
    cases, log = Identifier(schema, "floor_cases"), Identifier(schema, "floor_log")
    conn.execute(SQL("CREATE TABLE {} (id uuid PRIMARY KEY, body jsonb NOT NULL)").format(cases))
    conn.execute(SQL("CREATE TABLE {} (position bigserial PRIMARY KEY, case_id uuid NOT NULL, kind text NOT NULL, "
                     "body jsonb NOT NULL)").format(log))
    with conn.cursor() as cursor:
        cursor.executemany(SQL("INSERT INTO {} (id, body) VALUES (%s, '{{}}')").format(cases),
                           [(case_id,) for case_id in case_ids])


class NoteIn(BaseModel):
    text: str = Field(min_length=1, max_length=4000)


class AssignmentIn(BaseModel):
    assignee: str = Field(min_length=1, max_length=200)


class CaseIn(BaseModel):
    kind: str = Field(min_length=1, max_length=100)
    client_id: uuid.UUID
    org_unit: str = Field(min_length=1, max_length=50)
    need: str = Field(min_length=1, max_length=4000)


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    schema = os.environ["BENCH_FLOOR_SCHEMA"]
    app.state.tokens = {_digest(s) for s in os.environ["BENCH_FLOOR_TOKENS"].split(",") if s}
    app.state.cases, app.state.log = Identifier(schema, "floor_cases"), Identifier(schema, "floor_log")
    with ConnectionPool(os.environ["BENCH_FLOOR_DATABASE_URL"], min_size=POOL_SIZE, max_size=POOL_SIZE,
                        kwargs={"autocommit": True}) as pool:
        app.state.pool = pool
        yield


# api.app.NO_OPENTELEMETRY, written out, as in bench.trivial_app.
app = FastAPI(title="floor", lifespan=lifespan,
              telemetry={"tracing": False, "metrics": False, "logs": False, "operation_spans": False})


async def caller(request: Request) -> str:
    """The bearer token's hash, if it is one of the benchmark's (on the event loop, as lastmeter's is)."""
    scheme, _, secret = request.headers.get("authorization", "").partition(" ")
    digest = _digest(secret.strip())
    if scheme.lower() != "bearer" or digest not in request.app.state.tokens:
        raise HTTPException(401, "a valid bearer token is required")
    return digest


Caller = Annotated[str, Depends(caller)]


def _append(request: Request, response: Response, case_id: uuid.UUID, kind: str, body: BaseModel) -> dict:
    with request.app.state.pool.connection() as conn:
        position = conn.execute(SQL("INSERT INTO {} (case_id, kind, body) VALUES (%s, %s, %s) RETURNING position")
                                .format(request.app.state.log), (case_id, kind, body.model_dump_json())).fetchone()[0]
    response.headers["X-Position"] = str(position)
    return {"id": str(case_id), "kind": kind, "position": position}


@app.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@app.post("/v1/cases/{case_id}/notes")
def add_note(case_id: uuid.UUID, body: NoteIn, request: Request, response: Response, _: Caller) -> dict:
    return _append(request, response, case_id, "note", body)


@app.post("/v1/cases/{case_id}/assignment")
def assign(case_id: uuid.UUID, body: AssignmentIn, request: Request, response: Response, _: Caller) -> dict:
    return _append(request, response, case_id, "assignment", body)


@app.get("/v1/cases/{case_id}")
def read_case(case_id: uuid.UUID, request: Request, _: Caller) -> dict:
    with request.app.state.pool.connection() as conn:
        row = conn.execute(SQL("SELECT body FROM {} WHERE id = %s").format(request.app.state.cases),
                           (case_id,)).fetchone()
    if row is None:
        raise HTTPException(404, f"case {case_id} not found")
    return {"id": str(case_id), **row[0]}


@app.post("/v1/cases", status_code=201)
def open_case(body: CaseIn, request: Request, response: Response, _: Caller) -> dict:
    """The case and its first entry in the log, in one statement."""
    case_id, state = uuid.uuid4(), request.app.state
    with state.pool.connection() as conn:
        position = conn.execute(SQL("WITH opened AS (INSERT INTO {} (id, body) VALUES (%(id)s, %(body)s)) "
                                    "INSERT INTO {} (case_id, kind, body) VALUES (%(id)s, 'opened', %(body)s) "
                                    "RETURNING position").format(state.cases, state.log),
                                {"id": case_id, "body": body.model_dump_json()}).fetchone()[0]
    response.headers["Location"], response.headers["X-Position"] = f"/v1/cases/{case_id}", str(position)
    return {"id": str(case_id), **body.model_dump(mode="json")}
