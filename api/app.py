"""The FastAPI application, assembled in one place."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from api import problems
from api.routes import cases, clients, health, reference
from api.settings import Settings, get_settings
from domain.application import LastMeter


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        lastmeter = open_store(settings)
        app.state.lastmeter = lastmeter
        try:
            yield
        finally:
            lastmeter.close()

    app = FastAPI(
        title="lastmeter",
        version="1",
        description="Need-to-service cases for the disability-service network (最后一米).",
        lifespan=lifespan,
    )
    problems.install(app)
    for module in (clients, cases, reference, health):
        app.include_router(module.router)
    return app


def open_store(settings: Settings) -> LastMeter:
    """The application on the configured store, with the built-in org tree in place."""
    lastmeter = LastMeter(env=settings.eventsourcing_env())
    lastmeter.found()
    return lastmeter
