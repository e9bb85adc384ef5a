"""GET /metrics: Prometheus text format (see api.metrics)."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from api.deps import KeyDep
from api.metrics import render

router = APIRouter(tags=["system"])


@router.get("/metrics", dependencies=[KeyDep], response_class=Response,
            responses={200: {"content": {"text/plain": {}}}})
def metrics(request: Request) -> Response:
    """The fleet's run metrics, read from the run store at scrape time (OpenMetrics when the
    scraper's Accept header asks for it)."""
    body, content_type = render(request.headers.get("accept"))
    return Response(body, media_type=content_type)
