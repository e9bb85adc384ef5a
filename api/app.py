"""The HTTP API: `uvicorn api.app:app`."""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from redis.exceptions import RedisError

from api.limits import BodyLimitMiddleware
from api.routes import batches, runs, system
from streaming.errors import EventStoreUnavailable
from tasks import runtime as runtime_module
from tasks.errors import (
    BrokerUnavailable,
    InputTooLarge,
    InvalidRequest,
    RunConflict,
    RunNotFound,
    UnknownAgent,
)
from tasks.settings import Settings

log = logging.getLogger(__name__)

ERROR_STATUS = [  # most specific first
    (InputTooLarge, 413),
    (InvalidRequest, 422),
    (UnknownAgent, 404),
    (RunNotFound, 404),
    (RunConflict, 409),
    (BrokerUnavailable, 503),
    (EventStoreUnavailable, 503),
]


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app; settings are read from the environment when not given."""
    settings = runtime_module.configure(settings) if settings else runtime_module.settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        rt = runtime_module.runtime()  # loads the agent modules
        if settings.embedded:
            rt.start_embedded_worker()
        try:
            yield
        finally:
            await rt.events.aclose()
            if settings.embedded:
                rt.stop_embedded_worker()

    app = FastAPI(
        title="runcast",
        version="0.1.0",
        description="Run AI-agent work in the background, stream its events.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_input_bytes)
    for router in (runs.router, batches.router, system.router):
        app.include_router(router)

    for exc_type, status in ERROR_STATUS:
        app.add_exception_handler(exc_type, _handler(status))
    app.add_exception_handler(RedisError, _redis_down)
    return app


def _handler(status: int):
    async def handle(_request: Request, exc: Exception) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=status)

    return handle


async def _redis_down(_request: Request, exc: Exception) -> JSONResponse:
    log.warning("Redis error: %s", exc)
    return JSONResponse({"detail": "the run store (Redis) is unavailable; try again"},
                        status_code=503)


app = create_app()
