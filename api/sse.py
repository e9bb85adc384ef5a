"""Server-sent events of one run: replay from a seq, then live, until the terminal event."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator
from contextlib import aclosing

from fastapi import HTTPException
from sse_starlette import EventSourceResponse, ServerSentEvent

from api.constants import PING_S, SSE_SEND_TIMEOUT_S
from api.fanout import shared_frames
from api.sse_response import BytesEventSourceResponse
from streaming.backends.base import EventBackend

SSE_HEADERS = {"X-Accel-Buffering": "no", "Cache-Control": "no-cache"}


def resume_point(last_event_id: str | None, after: int) -> int:
    """`Last-Event-ID` wins over `?after=`; it must be a plain non-negative integer."""
    if last_event_id is None or last_event_id.strip() == "":
        return after
    value = last_event_id.strip()
    if not (value.isascii() and value.isdigit()) or len(value) > 15:  # not '²' or '١'
        raise HTTPException(422, "Last-Event-ID must be the seq (a non-negative integer) of an event")
    return int(value)


_subscribers = 0  # SSE streams open in this process (runcast_sse_subscribers)
_subscribers_lock = threading.Lock()


def _count_subscriber(delta: int) -> None:
    global _subscribers
    with _subscribers_lock:
        _subscribers += delta


def subscribers() -> int:
    return _subscribers


async def counted(stream: AsyncIterator[ServerSentEvent]) -> AsyncIterator[ServerSentEvent]:
    """`stream`, counted in runcast_sse_subscribers while it is open (any SSE route can wrap
    its frames in this)."""
    _count_subscriber(1)
    try:
        async with aclosing(stream):  # closed with this one, as it would be unwrapped
            async for frame in stream:
                yield frame
    finally:
        _count_subscriber(-1)


async def frames(backend: EventBackend, run_id: str, after: int) -> AsyncIterator[ServerSentEvent]:
    async for event in backend.subscribe(run_id, after=after):
        yield ServerSentEvent(data=event.to_json(), event=event.type, id=str(event.seq))


def event_stream(backend: EventBackend, run_id: str, after: int,
                 headers: dict[str, str] | None = None) -> EventSourceResponse:
    return BytesEventSourceResponse(
        counted(shared_frames(backend, run_id, after)),  # one subscription per run per process
        ping=PING_S,
        headers={**SSE_HEADERS, **(headers or {})},
        send_timeout=SSE_SEND_TIMEOUT_S,
    )
