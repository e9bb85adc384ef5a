"""The HTTP API: `uvicorn api.app:app`."""

from __future__ import annotations

import logging
import math
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse
from redis.exceptions import RedisError
from starlette.exceptions import HTTPException

from api.deps import KeyDep
from api.limits import BodyLimitMiddleware
from api.routes import batches, runs, system, ui
from api.routes import metrics as metrics_routes
from streaming.errors import EventStoreUnavailable
from tasks import celeryapp as runtime_module
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
        openapi_url=None, docs_url=None, redoc_url=None,  # served below, behind the API keys
    )
    app.state.settings = settings
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_input_bytes)
    for router in (runs.router, batches.router, system.router, ui.router):
        app.include_router(router)
    app.include_router(metrics_routes.router)

    for exc_type, status in ERROR_STATUS:
        app.add_exception_handler(exc_type, _handler(status))
    app.add_exception_handler(RedisError, _redis_down)
    app.add_exception_handler(RequestValidationError, _invalid_request)
    app.add_exception_handler(HTTPException, _http_error)
    _document_string_422(app)
    _serve_docs(app)
    return app


def _serve_docs(app: FastAPI) -> None:
    """The OpenAPI schema and its two viewers, FastAPI's usual routes, but like every route
    but /healthz they need an API key when keys are set (a browser then gets a 401: fetch the
    schema with the key instead)."""

    @app.get("/openapi.json", include_in_schema=False, dependencies=[KeyDep])
    async def openapi_schema() -> JSONResponse:
        return JSONResponse(app.openapi())

    @app.get("/docs", include_in_schema=False, dependencies=[KeyDep])
    async def swagger_ui() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url="/openapi.json", title=f"{app.title} - docs")

    @app.get("/redoc", include_in_schema=False, dependencies=[KeyDep])
    async def redoc() -> HTMLResponse:
        return get_redoc_html(openapi_url="/openapi.json", title=f"{app.title} - ReDoc")


def _handler(status: int):
    async def handle(_request: Request, exc: Exception) -> JSONResponse:
        return JSONResponse({"detail": json_safe(str(exc))}, status_code=status)

    return handle


async def _invalid_request(_request: Request, exc: RequestValidationError) -> JSONResponse:
    """FastAPI's 422, safe whatever the request held: FastAPI's own handler fails (a 500) when
    it echoes a NaN, a lone surrogate or a deeply nested value back."""
    return JSONResponse({"detail": json_safe(exc.errors())}, status_code=422)


async def _http_error(request: Request, exc: HTTPException):
    """FastAPI's own answer, but a JSON body Python's parser gives up on (nested thousands of
    levels deep, an integer of thousands of digits) is an invalid body, a 422 saying why, like
    any other JSON the API cannot take, not FastAPI's 400 "There was an error parsing the
    body"."""
    cause = exc.__cause__
    if exc.status_code == 400 and isinstance(cause, RecursionError | ValueError):
        reason = "it is nested too deeply" if isinstance(cause, RecursionError) else str(cause)
        return JSONResponse({"detail": json_safe(f"the request body is not JSON the API can "
                                                 f"read: {reason}")}, status_code=422)
    return await http_exception_handler(request, exc)


def _document_string_422(app: FastAPI) -> None:
    """A 422 from our own checks (an unknown filter name, a bad cursor) has a string `detail`,
    FastAPI's own 422 a list: the OpenAPI document says so, so clients can trust it."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schemas = build().get("components", {}).get("schemas", {})
            properties = schemas.get("HTTPValidationError", {}).get("properties", {})
            if "detail" in properties:
                listed = {k: v for k, v in properties["detail"].items() if k != "title"}
                properties["detail"] = {"title": "Detail",
                                        "anyOf": [listed, {"type": "string"}]}
        return app.openapi_schema

    app.openapi = openapi


def json_safe(value: Any, depth: int = 0) -> Any:
    """`value` as plain JSON: NaN and Infinity as text, lone surrogates escaped, nesting past 32
    levels cut to "...", other objects as their str()."""
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, str):
        return value if value.isascii() else value.encode("utf-8", "backslashreplace").decode()
    if depth >= 32:
        return "..."
    if isinstance(value, dict):
        return {json_safe(str(k)): json_safe(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v, depth + 1) for v in value]
    return json_safe(str(value))


async def _redis_down(_request: Request, exc: Exception) -> JSONResponse:
    log.warning("Redis error: %s", exc)
    return JSONResponse({"detail": "the run store (Redis) is unavailable; try again"},
                        status_code=503)


app = create_app()
