"""Routes of one resource: batches."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from api.deps import BatchId, KeyDep
from api.schemas import BatchCreated, BatchRequest, BatchStatus
from tasks import service
from tasks.celeryapp import runtime

router = APIRouter(prefix="/batches", tags=["batches"], dependencies=[KeyDep])


@router.post("", status_code=202, response_model=BatchCreated)
def submit_batch(body: BatchRequest) -> dict[str, Any]:
    runs = [run.model_dump() for run in body.runs]
    return service.submit_batch(runtime(), runs, body.metadata, body.webhook)


# exclude_unset: `webhook` and `webhook_status` only on a batch that has a webhook
@router.get("/{batch_id}", response_model=BatchStatus, response_model_exclude_unset=True)
def batch_status(batch_id: BatchId) -> dict[str, Any]:
    return service.batch_status(runtime(), batch_id)


@router.post("/{batch_id}/cancel", status_code=202, response_model=BatchStatus,
             response_model_exclude_unset=True)
def cancel_batch(batch_id: BatchId) -> dict[str, Any]:
    return service.cancel_batch(runtime(), batch_id)
