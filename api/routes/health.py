"""Operations: liveness, readiness, projections and Prometheus metrics."""

import asyncio
from typing import Annotated

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from api.access import Principal
from api.deps import Cursor, ReadSideDep, SettingsDep, WholeLimit, permit
from api.problems import problem
from api.paging import paged

router = APIRouter(tags=["operations"])
FAILURES_NOT_READY = 3  # one failure is a store restarting; three in a row, a second apart, is not
READY_WAIT = 2.0  # seconds: a store that takes longer to say where the views stand is not ready


# Probes ask with HEAD as often as with GET (load balancers, uptime checks): both are answered; the
# API's description keeps one operation each.
@router.head("/healthz", include_in_schema=False)
@router.get("/healthz")
async def healthz():
    """The process is up: answered on the event loop, so that workers all waiting on a store that does
    not answer do not make a live server look dead (and restarted, when it would recover by itself)."""
    return {"status": "ok"}


@router.head("/readyz", include_in_schema=False)
@router.get("/readyz")
async def readyz(request: Request, readside: ReadSideDep, settings: SettingsDep):
    """Ready when the store answers (within READY_WAIT), the projector runs and no view is far behind.
    One check at a time: while a store hangs, probes wait for the check already asking, in the thread
    it holds, rather than each in a thread (and for a pooled connection) of its own."""
    state = request.app.state
    check = getattr(state, "readiness", None)
    if check is None or check.done() or check.get_loop() is not asyncio.get_running_loop():
        check = state.readiness = asyncio.ensure_future(run_in_threadpool(readiness, readside, settings))
    try:
        return await asyncio.wait_for(asyncio.shield(check), READY_WAIT)
    except TimeoutError:
        return problem(503, "Not ready", f"the store did not answer within {READY_WAIT:g} s")


def readiness(readside, settings):
    try:
        statuses = readside.projector.statuses()
    except Exception as error:  # any store failure means: not ready
        return problem(503, "Not ready", f"the store does not answer ({type(error).__name__})")
    if settings.run_projector and not readside.following:
        return problem(503, "Not ready", "the projector is not running")
    if readside.failing >= FAILURES_NOT_READY:  # its views stand still, however near the head they stopped
        return problem(503, "Not ready", f"the projector has failed {readside.failing} times in a row "
                                         "(the server's log says why)")
    others = [s.name for s in statuses if not s.current]
    if others:  # made anew by a process of another version still running: its rows are that version's
        return problem(503, "Not ready", f"views made by another version of lastmeter: {', '.join(others)} "
                                         "(stop the processes of the other version)")
    behind = [s.name for s in statuses if s.lag > settings.ready_max_lag]
    if behind:
        return problem(503, "Not ready", f"views far behind the log: {', '.join(behind)}")
    return {"status": "ready", "views": {s.name: {"position": s.position, "lag": s.lag} for s in statuses}}


@router.get("/v1/projections")
def projections(readside: ReadSideDep, _: Annotated[Principal, permit("read_projections")],
                limit: WholeLimit = None, cursor: Cursor = None):
    """Each view's position in the event log and how far behind the head it is."""
    items, more = paged([{"name": s.name, "position": s.position, "head": s.head, "lag": s.lag}
                         for s in readside.projector.statuses()], "name", limit, cursor)
    return {"items": items, "next_cursor": more}


@router.get("/metrics", response_class=PlainTextResponse)
def metrics(request: Request):
    """Prometheus exposition."""
    return Response(generate_latest(request.app.state.metrics), media_type=CONTENT_TYPE_LATEST)
