"""Agents and health."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from api.deps import KeyDep
from api.schemas import AgentList, Health
from tasks import registry
from tasks.celeryapp import runtime
from tasks.constants import WORKER_ALIVE_S

router = APIRouter(tags=["system"])


@router.get("/agents", response_model=AgentList, dependencies=[KeyDep])
def list_agents() -> dict[str, Any]:
    return {"agents": [spec.info() for spec in registry.all_agents()]}


@router.get("/healthz", response_model=Health, responses={503: {"model": Health}})
def health() -> Any:
    rt = runtime()
    try:
        redis = rt.store.health()
        workers = rt.workers(time.time() - WORKER_ALIVE_S)
    except Exception as exc:  # noqa: BLE001 - any failure to reach Redis is "down"
        body = {"status": "unavailable", "redis": f"down: {type(exc).__name__}", "workers": 0,
                "detail": "Redis is unreachable"}
        return JSONResponse(body, status_code=503)
    return {"status": "ok", "redis": redis, "workers": workers}
