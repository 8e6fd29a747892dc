"""The FastAPI application, assembled in one place."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from api import metrics, problems
from api.routes import audit, cases, clients, contracts, health, reference, reports, workload
from api.backend import open_backend
from api.readside import ReadSide
from api.settings import Settings, get_settings
from api.tokens import CheckedTokens


ROUTERS = tuple(m.router for m in (clients, cases, contracts, workload, reports, audit, reference, health))


def create_app(settings: Settings | None = None) -> FastAPI:
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
    )
    problems.install(app)
    app.state.metrics = metrics.install(app)
    for router in ROUTERS:
        app.include_router(router)
    return app
