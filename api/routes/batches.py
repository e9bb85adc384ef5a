"""Routes of one resource: batches."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse

from api.constants import MAX_BATCH_RUNS, PING_S, SSE_SEND_TIMEOUT_S
from api.deps import BatchId, KeyDep
from api.schemas import BatchCreated, BatchRequest, BatchResults, BatchStatus
from api.sse import SSE_HEADERS, coalesced, counted, resume_point, sse_frame
from api.sse_response import BytesEventSourceResponse
from streaming.constants import BATCH_PAGE_RUNS
from tasks import batch_reads, service
from tasks.celeryapp import runtime

router = APIRouter(prefix="/batches", tags=["batches"], dependencies=[KeyDep])

NDJSON = "application/x-ndjson"


@router.post("", status_code=202, response_model=BatchCreated)
def submit_batch(body: BatchRequest) -> dict[str, Any]:
    runs = [dict(run.__dict__) for run in body.runs]  # every field, as model_dump but cheaper
    return service.submit_batch(runtime(), runs, body.metadata, body.webhook)


# exclude_unset: `webhook` and `webhook_status` only on a batch that has a webhook
@router.get("/{batch_id}", response_model=BatchStatus, response_model_exclude_unset=True)
def batch_status(batch_id: BatchId) -> dict[str, Any]:
    return service.batch_status(runtime(), batch_id)


@router.get("/{batch_id}/stream", response_class=Response,
            responses={200: {"content": {"text/event-stream": {}}}})
async def stream_batch(
    batch_id: BatchId,
    after: Annotated[int, Query(ge=0, le=2**53)] = 0,
    last_event_id: Annotated[str | None, Header(alias="Last-Event-ID", max_length=100)] = None,
):
    """SSE: `event: run` per status change of a run of the batch, then `event: done`; ids are
    the batch's seq; replay, then live; resumes after `Last-Event-ID` (or `after`)."""
    start = resume_point(last_event_id, after)
    await run_in_threadpool(batch_reads.require_batch, runtime(), batch_id)
    return BytesEventSourceResponse(counted(coalesced(_frames(batch_id, start))), ping=PING_S,
                                    headers=SSE_HEADERS, send_timeout=SSE_SEND_TIMEOUT_S)


async def _frames(batch_id: str, after: int) -> AsyncIterator[bytes]:
    async for frame in batch_reads.subscribe(runtime(), batch_id, after):
        yield sse_frame(frame["seq"], frame["event"],
                        json.dumps(frame["data"], separators=(",", ":")))


@router.get("/{batch_id}/results", response_model=BatchResults,
            responses={200: {"content": {NDJSON: {}}}})
def batch_results(
    batch_id: BatchId,
    request: Request,
    after: Annotated[int, Query(ge=0, le=MAX_BATCH_RUNS)] = 0,
    limit: Annotated[int, Query(ge=1, le=MAX_BATCH_RUNS)] = 1000,
) -> Any:
    """Results in submit order: JSON pages, or with `Accept: application/x-ndjson` every result
    from `after` on as one JSON line each, streamed."""
    if NDJSON in request.headers.get("accept", ""):
        batch_reads.require_batch(runtime(), batch_id)  # a 404 before the stream starts
        return StreamingResponse(_ndjson(batch_id, after), media_type=NDJSON)
    return batch_reads.results_page(runtime(), batch_id, after, limit)


def _ndjson(batch_id: str, after: int) -> Iterator[bytes]:
    """One chunk per page of results (a line each): the batch is never held whole."""
    lines: list[str] = []
    for result in batch_reads.iter_results(runtime(), batch_id, after):
        lines.append(json.dumps(result, separators=(",", ":")) + "\n")
        if len(lines) >= BATCH_PAGE_RUNS:
            yield "".join(lines).encode()
            lines = []
    if lines:
        yield "".join(lines).encode()


@router.post("/{batch_id}/cancel", status_code=202, response_model=BatchStatus,
             response_model_exclude_unset=True)
def cancel_batch(batch_id: BatchId) -> dict[str, Any]:
    return service.cancel_batch(runtime(), batch_id)
