"""Dependencies of the routes: settings, auth, run ids.

All `async def`: they only compute, and FastAPI runs a plain `def` dependency in its thread
pool, a hop per dependency per request that dominates a small request under load.
"""

from __future__ import annotations

import re
from typing import Annotated

from fastapi import Depends, HTTPException, Path, Query, Request

from api.auth import valid_key, valid_token
from tasks.settings import Settings

RUN_ID_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,64}")


def app_settings(request: Request) -> Settings:
    """The app's settings, read directly: what a hot route or dependency uses instead of
    SettingsDep, one dependency less for FastAPI to solve per request."""
    return request.app.state.settings


async def get_settings(request: Request) -> Settings:
    return app_settings(request)


SettingsDep = Annotated[Settings, Depends(get_settings)]


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, credentials = header.partition(" ")
    return credentials.strip() if scheme.lower() == "bearer" else None


def _unauthorized(detail: str) -> HTTPException:
    return HTTPException(401, detail, headers={"WWW-Authenticate": "Bearer"})


async def require_key(request: Request) -> None:
    """With RUNCAST_API_KEYS set, the request needs `Authorization: Bearer KEY`."""
    keys = app_settings(request).key_list
    if keys and not valid_key(keys, _bearer(request)):
        raise _unauthorized("a valid API key is required: send 'Authorization: Bearer KEY'")


async def checked_run_id(run_id: Annotated[str, Path(max_length=200)]) -> str:
    if not RUN_ID_PATTERN.fullmatch(run_id):
        raise HTTPException(404, f"no run {run_id!r}")
    return run_id


async def checked_batch_id(batch_id: Annotated[str, Path(max_length=200)]) -> str:
    if not RUN_ID_PATTERN.fullmatch(batch_id):
        raise HTTPException(404, f"no batch {batch_id!r}")
    return batch_id


async def require_read(
    request: Request,
    run_id: Annotated[str, Depends(checked_run_id)],
    token: Annotated[str | None, Query(max_length=200, description="the run's stream_token")] = None,
) -> str:
    """Reading one run: an API key, or that run's stream_token as `?token=`."""
    settings = app_settings(request)
    keys = settings.key_list
    if keys and not (
        valid_key(keys, _bearer(request)) or valid_token(settings.secret, run_id, token)
    ):
        raise _unauthorized("a valid API key or this run's stream_token is required")
    return run_id


KeyDep = Depends(require_key)
ReadRunId = Annotated[str, Depends(require_read)]
RunId = Annotated[str, Depends(checked_run_id)]
BatchId = Annotated[str, Depends(checked_batch_id)]
