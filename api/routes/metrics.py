"""GET /metrics: Prometheus text format (see api.metrics)."""

from __future__ import annotations

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST

from api.deps import KeyDep
from api.metrics import render

router = APIRouter(tags=["system"])


@router.get("/metrics", dependencies=[KeyDep], response_class=Response,
            responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}})
def metrics() -> Response:
    """The fleet's run metrics, read from the run store at scrape time."""
    return Response(render(), media_type=CONTENT_TYPE_LATEST)
