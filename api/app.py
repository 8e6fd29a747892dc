"""The FastAPI application, assembled in one place."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from api import metrics, problems
from api.routes import audit, cases, clients, contracts, health, reference, reports, workload
from api.readside import ReadSide
from api.settings import Settings, get_settings
from domain.application import LastMeter


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        lastmeter = open_store(settings)
        readside = ReadSide(lastmeter)
        if settings.run_projector:
            readside.start()
        app.state.lastmeter, app.state.readside, app.state.settings = lastmeter, readside, settings
        try:
            yield
        finally:
            readside.close()
            lastmeter.close()

    app = FastAPI(
        title="lastmeter",
        version="1",
        description="Need-to-service cases for the disability-service network (最后一米).",
        lifespan=lifespan,
    )
    problems.install(app)
    app.state.metrics = metrics.install(app)
    for module in (clients, cases, contracts, workload, reports, audit, reference, health):
        app.include_router(module.router)
    return app


def open_store(settings: Settings) -> LastMeter:
    """The application on the configured store, with the built-in org tree in place."""
    lastmeter = LastMeter(env=settings.eventsourcing_env())
    lastmeter.found()
    return lastmeter
