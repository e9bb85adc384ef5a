"""The web UI (DESIGN.md, "Web UI"): static pages that read the API over fetch and EventSource.

The pages are shells without data, so they are served without a key; every piece of data they
show comes from the API routes, which check the key (or a run's stream_token) as usual.
"""

from __future__ import annotations

from functools import cache
from importlib import resources

from fastapi import APIRouter, HTTPException, Response

from api.deps import BatchId, RunId

router = APIRouter(prefix="/ui", tags=["ui"], include_in_schema=False)

STATIC_PACKAGE = "api"
STATIC_DIR = "static"
MEDIA_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".svg": "image/svg+xml",
}
# Only this host: no script, style, font or connection elsewhere; no framing; and no Referer,
# so a `?token=` in the page's address never leaves with a request.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; "
        "form-action 'none'; frame-ancestors 'none'"
    ),
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
}
STATIC_CACHE = "no-cache"  # revalidated each load: a new release is picked up at once


@cache
def _read(name: str) -> bytes:
    return resources.files(STATIC_PACKAGE).joinpath(STATIC_DIR, name).read_bytes()


def _file(name: str) -> Response:
    suffix = name[name.rfind("."):]
    if "/" in name or name.startswith(".") or suffix not in MEDIA_TYPES:
        raise HTTPException(404, f"no file {name!r}")
    try:
        body = _read(name)
    except (FileNotFoundError, IsADirectoryError):
        raise HTTPException(404, f"no file {name!r}") from None
    headers = {**SECURITY_HEADERS, "Cache-Control": STATIC_CACHE}
    return Response(body, media_type=MEDIA_TYPES[suffix], headers=headers)


@router.get("")
def runs_page() -> Response:
    return _file("runs.html")


@router.get("/runs/{run_id}")
def run_page(run_id: RunId) -> Response:
    return _file("run.html")


@router.get("/batches/{batch_id}")
def batch_page(batch_id: BatchId) -> Response:
    return _file("batch.html")


@router.get("/static/{name}")
def static_file(name: str) -> Response:
    return _file(name)
