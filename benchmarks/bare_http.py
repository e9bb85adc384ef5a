"""Bare Celery behind a minimal FastAPI app, the HTTP path's context baseline.

    REDIS_URL=redis://... uvicorn benchmarks.bare_http:app

What a plain Celery user puts in front of `bench.noop` to offer it over HTTP: `POST /tasks`
sends the task (`apply_async`), `GET /tasks/{id}/wait` returns its result (`AsyncResult.get()`,
Redis result backend), both plain `def` routes in FastAPI's thread pool, served by the same
uvicorn as runcast's API. No run record, no event log, no auth: measured beside runcast's API,
it shows how much of the HTTP path's gap to bare Celery is the HTTP hop itself.
"""

from __future__ import annotations

import os
from typing import Annotated, Any

from celery.result import AsyncResult
from fastapi import FastAPI, Query

from benchmarks.bare import stock_client

client = stock_client(os.environ["REDIS_URL"])
noop = client.tasks["bench.noop"]
app = FastAPI(title="bare Celery over HTTP (benchmark baseline)")


@app.post("/tasks", status_code=202)
def submit() -> dict[str, Any]:
    return {"task_id": noop.apply_async(args=[{}]).id}


@app.get("/tasks/{task_id}/wait")
def wait(task_id: str, timeout: Annotated[float, Query(gt=0, le=300)] = 30) -> dict[str, Any]:
    result = AsyncResult(task_id, app=client)
    return {"task_id": task_id, "result": result.get(timeout=timeout), "state": result.state}
