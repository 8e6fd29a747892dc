"""The FastAPI application, assembled in one place."""

import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from api import metrics, openapi, problems
from api.bodylimit import BodyLimit
from api.logs import WITHOUT_MESSAGES
from api.routes import audit, cases, clients, contracts, health, reference, reports, workload
from api.backend import open_backend
from api.readside import ReadSide
from api.settings import Settings, get_settings
from api.tokens import CheckedTokens


# Metrics are Prometheus's (/metrics); FastAPI would otherwise ask OpenTelemetry on every request
# whether anyone had configured it (reading the environment three times).
NO_OPENTELEMETRY = {"tracing": False, "metrics": False, "logs": False, "operation_spans": False}
GC_THRESHOLDS = (10_000, 10, 10)  # the first: allocations between young collections (Python's default: 700)
# Matched in this order, route by route: the case routes, most of the traffic, first.
ROUTERS = tuple(m.router for m in (cases, clients, contracts, workload, reports, audit, reference, health))


def settle_the_heap() -> None:
    """Moves what startup made (modules, the app, its schemas: about 110,000 objects) out of the
    collector's sight, and lets the objects of requests in flight die before they are promoted.

    Under the HTTP bench's load a full collection walked all of it, holding the interpreter for up
    to 64 ms while every request in flight waited: 732 ms in 14 full collections in one run, and
    p99 latency 125 ms. Frozen and with fewer young collections: 2 full collections, one of them
    this one, and p99 99 ms. Frozen objects are still freed when no longer referenced; only cycles
    among them are never collected.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def serving_app() -> FastAPI:
    """The app as `lastmeter serve` runs it: a process of its own, whose heap is settled at startup."""
    own_the_access_log()
    return create_app(settle_heap=True)


def own_the_access_log() -> None:
    """However the app is served (`lastmeter serve`, or `uvicorn api.app:serving_app --factory` by
    hand), its access log is lastmeter's, which names each request's route: uvicorn's own writes the
    path and query asked for, and with them any identifier a client put there. uvicorn's error log
    keeps the traceback of a server error, without the messages."""
    logging.getLogger("uvicorn.access").disabled = True
    logging.getLogger("uvicorn.error").addFilter(WITHOUT_MESSAGES)
    ours = logging.getLogger("lastmeter")
    if not ours.handlers:  # served by hand: on uvicorn's console, as `serve` configures it
        ours.handlers = list(logging.getLogger("uvicorn").handlers)
        ours.setLevel(logging.INFO)
        ours.propagate = False


def create_app(settings: Settings | None = None, settle_heap: bool = False) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        backend = open_backend(settings)
        readside = ReadSide(backend, in_a_process=settings.projector_process)
        if settings.run_projector:
            readside.start()
        app.state.lastmeter, app.state.backend = backend.lastmeter, backend
        app.state.readside, app.state.settings = readside, settings
        app.state.tokens = CheckedTokens(backend.lastmeter, settings.token_recheck_seconds)
        if settle_heap:  # not where apps are made by the hundred (tests): frozen cycles are never collected
            settle_the_heap()
        try:
            yield
        finally:
            readside.close()
            backend.close()

    app = FastAPI(
        title="lastmeter",
        version="1",
        description="Need-to-service cases for the disability-service network (最后一米).",
        lifespan=lifespan,
        telemetry=NO_OPENTELEMETRY,
    )
    problems.install(app)
    openapi.install(app, ROUTERS)
    app.add_middleware(BodyLimit)
    app.state.metrics = metrics.install(app)  # outside the limit: a request refused is counted too
    for router in ROUTERS:
        app.include_router(router)
    return app
