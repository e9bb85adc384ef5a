"""Server-sent events of one run: replay from a seq, then live, until the terminal event."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from contextlib import aclosing, suppress

from fastapi import HTTPException
from sse_starlette import EventSourceResponse, ServerSentEvent

from api.constants import COALESCE_BUFFER_FRAMES, FRAMES_PER_SEND, PING_S, SSE_SEND_TIMEOUT_S
from api.fanout import PING_FRAME, shared_frames
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


def sse_frame(seq: int, event: str, data: str) -> bytes:
    """One SSE frame, exactly as sse-starlette writes it."""
    if "\n" in data or "\r" in data:  # never from compact JSON; split as sse-starlette does
        return ServerSentEvent(data=data, event=event, id=str(seq)).encode()
    return f"id: {seq}\r\nevent: {event}\r\ndata: {data}\r\n\r\n".encode()


_END = object()


async def coalesced(frames: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """`frames` (SSE bytes), every frame already waiting sent together (up to FRAMES_PER_SEND),
    and `: ping` after PING_S without one: a stream of many small frames (a batch's) costs a send
    per burst, not per frame. The frames are read by a task of their own, at most
    COALESCE_BUFFER_FRAMES ahead of the client."""
    queue: asyncio.Queue = asyncio.Queue(maxsize=COALESCE_BUFFER_FRAMES)

    async def pump() -> None:
        try:
            async for frame in frames:
                await queue.put(frame)
            await queue.put(_END)
        except Exception as exc:  # noqa: BLE001 - raised to the client's stream, in order
            await queue.put(exc)

    reader = asyncio.create_task(pump())
    try:
        while True:
            try:
                async with asyncio.timeout(PING_S):
                    item = await queue.get()
            except TimeoutError:
                yield PING_FRAME
                continue
            chunk: list[bytes] = []
            while True:
                if item is _END:
                    if chunk:
                        yield b"".join(chunk)
                    return
                if isinstance(item, Exception):
                    if chunk:
                        yield b"".join(chunk)
                    raise item
                chunk.append(item)
                if len(chunk) >= FRAMES_PER_SEND or queue.empty():
                    break
                item = queue.get_nowait()
            yield b"".join(chunk)
    finally:
        reader.cancel()
        with suppress(asyncio.CancelledError):
            await reader
        await frames.aclose()
