"""Routes of one resource: runs."""

from __future__ import annotations

import asyncio
import time
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Header, HTTPException, Query, Request, Response
from fastapi.concurrency import run_in_threadpool

from api.auth import stream_token
from api.constants import MAX_WAIT_S
from api.deps import KeyDep, ReadRunId, RunId, SettingsDep, app_settings
from api.fanout import feeds
from api.run_reads import aget_run
from api.schemas import CancelRequest, EventsPage, Run, RunList, RunRequest
from api.sse import event_stream, resume_point
from streaming.backends.base import RESYNC
from streaming.constants import SUBSCRIBE_RESYNC_S
from tasks import service
from tasks.celeryapp import runtime
from tasks.errors import RunConflict
from tasks.store import TERMINAL

router = APIRouter(prefix="/runs", tags=["runs"])

MAX_SEQ = 2**53
IdempotencyHeader = Annotated[
    str | None, Header(alias="Idempotency-Key", max_length=200, include_in_schema=True)
]


def with_token(run: dict[str, Any], secret: str) -> dict[str, Any]:
    return {**run, "stream_token": stream_token(secret, run["run_id"])}


async def _aget(run_id: str, secret: str) -> dict[str, Any]:
    run = await aget_run(runtime(), run_id)
    if run is None:
        raise HTTPException(404, f"no run {run_id!r}")
    return with_token(run, secret)


def _submit(body: RunRequest, idempotency_key: str | None) -> tuple[dict[str, Any], bool]:
    """The run as submitted (a new run as stored, not read back) and whether it is new."""
    key = body.idempotency_key or idempotency_key
    if body.idempotency_key and idempotency_key and body.idempotency_key != idempotency_key:
        raise HTTPException(422, "the Idempotency-Key header and body field differ")
    return service.submit_and_show(
        runtime(), body.agent, body.input, events=body.events, timeout=body.timeout,
        metadata=body.metadata, idempotency_key=key, webhook=body.webhook,
    )


@router.post("", status_code=202, response_model=Run, dependencies=[KeyDep],
             responses={404: {"description": "unknown agent"}, 409: {}, 413: {}})
async def submit_run(body: RunRequest, request: Request, response: Response,
                     idempotency_key: IdempotencyHeader = None) -> dict[str, Any]:
    # async, with the blocking part in the thread pool: a plain `def` route also has its
    # response validated in the pool, a second thread hop on the API's busiest request
    run, _new = await run_in_threadpool(_submit, body, idempotency_key)
    response.headers["Location"] = f"/runs/{run['run_id']}"
    return with_token(run, app_settings(request).secret)


@router.post("/stream", dependencies=[KeyDep], response_class=Response,
             responses={200: {"content": {"text/event-stream": {}}}})
async def submit_and_stream(body: RunRequest, settings: SettingsDep,
                            idempotency_key: IdempotencyHeader = None):
    """Submit a run and answer with its events until the terminal one (the run goes on if the
    caller leaves)."""
    run, _new = await run_in_threadpool(_submit, body, idempotency_key)
    run_id = run["run_id"]
    return event_stream(runtime().events, run_id, 0,
                        headers={"X-Run-Id": run_id, "Location": f"/runs/{run_id}"})


@router.get("", response_model=RunList, dependencies=[KeyDep])
def list_runs(
    settings: SettingsDep,
    status: Annotated[  # empty, as in `?status=&agent=`, is no filter, as for the others
        Literal["queued", "running", "succeeded", "failed", "cancelled", ""] | None,
        Query(description="only runs in this status; empty: any"),
    ] = None,
    agent: Annotated[str | None, Query(max_length=100)] = None,
    batch_id: Annotated[str | None, Query(max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> dict[str, Any]:
    page = service.list_runs(runtime(), status or None, agent or None, batch_id or None, limit,
                             cursor)
    page["runs"] = [with_token(run, settings.secret) for run in page["runs"]]
    return page


@router.get("/{run_id}", response_model=Run)
async def get_run(run_id: ReadRunId, request: Request) -> dict[str, Any]:
    # async read on the event loop: a plain `def` route costs two thread hops (the call and its
    # response's validation)
    return await _aget(run_id, app_settings(request).secret)


@router.get("/{run_id}/wait", response_model=Run)
async def wait_run(
    run_id: ReadRunId,
    request: Request,
    timeout: Annotated[float, Query(ge=0, le=MAX_WAIT_S)] = 30,
) -> dict[str, Any]:
    """The run once terminal, or as it is when `timeout` passes; woken by the run's events.

    Read first: a run that has ended (what a caller that submitted many and then waits for each
    finds) costs one read and no subscription; a run still going is read once more once
    subscribed, so its terminal event cannot slip between the read and the subscription."""
    secret = app_settings(request).secret
    run = await _aget(run_id, secret)
    if run["status"] in TERMINAL or timeout == 0:
        return run
    deadline = time.monotonic() + timeout
    async with runtime().events.live(run_id) as queue:
        run = await _aget(run_id, secret)  # subscribed: re-check
        while run["status"] not in TERMINAL:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                item = await asyncio.wait_for(queue.get(), min(remaining, SUBSCRIBE_RESYNC_S))
            except TimeoutError:
                item = RESYNC
            if item is RESYNC or any(event.is_terminal for event in item):
                run = await _aget(run_id, secret)
    return run


@router.get("/{run_id}/events", response_model=EventsPage)
def run_events(
    run_id: ReadRunId,
    after: Annotated[int, Query(ge=0, le=MAX_SEQ)] = 0,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
) -> Response:
    run = service.get_run(runtime(), run_id)
    if run is None:
        raise HTTPException(404, f"no run {run_id!r}")
    events = runtime().events.read(run_id, after=after, limit=limit)
    next_after = events[-1].seq if events else after
    done = run["status"] in TERMINAL and next_after >= run["last_seq"]
    envelopes = ",".join(event.to_json() for event in events)  # already JSON: not re-encoded
    flag = "true" if done else "false"
    body = f'{{"events":[{envelopes}],"next_after":{next_after},"done":{flag}}}'
    return Response(body, media_type="application/json")


@router.get("/{run_id}/stream", response_class=Response,
            responses={200: {"content": {"text/event-stream": {}}}})
async def stream_run(
    run_id: ReadRunId,
    after: Annotated[int, Query(ge=0, le=MAX_SEQ)] = 0,
    last_event_id: Annotated[str | None, Header(alias="Last-Event-ID", max_length=100)] = None,
):
    """SSE: `id: <seq>`, `event: <type>`, `data: <envelope>`; replay, then live; resumes after
    `Last-Event-ID` (or `after`); closes after the terminal event."""
    start = resume_point(last_event_id, after)
    events = runtime().events
    # A run with a live feed in this process exists; a crowd arriving at once shares one lookup.
    if feeds().get(events, run_id) is None and not await _run_exists(run_id):
        raise HTTPException(404, f"no run {run_id!r}")
    return event_stream(events, run_id, start)


_lookups: dict[str, asyncio.Future] = {}


async def _run_exists(run_id: str) -> bool:
    """Whether the run exists; concurrent checks of one run share a single store read."""
    pending = _lookups.get(run_id)
    if pending is None:
        pending = _lookups[run_id] = asyncio.ensure_future(aget_run(runtime(), run_id))
        pending.add_done_callback(lambda _: _lookups.pop(run_id, None))
    return await asyncio.shield(pending) is not None


@router.post("/{run_id}/cancel", status_code=202, response_model=Run, dependencies=[KeyDep],
             responses={404: {}, 409: {"description": "the run already ended"}})
def cancel_run(
    run_id: RunId,
    settings: SettingsDep,
    body: Annotated[CancelRequest | None, Body()] = None,
) -> dict[str, Any]:
    reason = body.reason if body else None
    try:
        run = service.cancel(runtime(), run_id, reason)
    except RunConflict as exc:
        raise HTTPException(409, str(exc)) from None
    return with_token(run, settings.secret)
