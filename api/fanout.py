"""SSE fan-out: one subscription per run per process, each frame encoded once.

The first SSE client of a run starts a `RunFeed`: one `backend.subscribe(run_id, after)` (replay
from the log, then live through the process's one pub/sub connection) whose events are encoded
into SSE frames once and kept in order. Every later client of the same run reads those frames from
memory: no log read of its own, no per-client decoding or encoding, and whatever piled up while it
was busy goes out in one send. A feed holds a gap-free, duplicate-free run of seqs (the backend's
subscribe guarantees it), so every client inherits those guarantees; a client resuming before the
feed's first seq gets a feed of its own. The feed ends after the terminal event and is dropped
when its last client leaves. A client that has had nothing to send for PING_S gets a `: ping`.
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections.abc import AsyncIterator

from sse_starlette import ServerSentEvent

from api.constants import FEED_CROWD_CLIENTS, FEED_CROWD_WAKE_S, FRAMES_PER_SEND, PING_S
from streaming.backends.base import EventBackend
from streaming.events import Event

log = logging.getLogger(__name__)

PING_FRAME = b": ping\r\n\r\n"


def encode_frame(event: Event) -> bytes:
    """`id: <seq>`, `event: <type>`, `data: <envelope>`: exactly what sse-starlette writes."""
    data = event.to_json()
    if "\n" in data or "\r" in data:  # never from runcast's compact JSON; split as sse-starlette
        return ServerSentEvent(data=data, event=event.type, id=str(event.seq)).encode()
    return f"id: {event.seq}\r\nevent: {event.type}\r\ndata: {data}\r\n\r\n".encode()


class RunFeed:
    """One run's frames from seq `start` + 1 on, shared by the process's clients of that run."""

    def __init__(self, backend: EventBackend, run_id: str, start: int) -> None:
        self.backend = backend
        self.run_id = run_id
        self.start = start  # frames[i] carries seq start + 1 + i
        self.frames: list[bytes] = []
        self.done = False  # every frame the run will have is in `frames`
        self.error: BaseException | None = None
        self.clients = 0
        self._changed = asyncio.Event()
        self._wake_pending = False
        self._task = asyncio.create_task(self._pump(), name=f"runcast-feed-{run_id[:8]}")

    async def _pump(self) -> None:
        try:
            async for event in self.backend.subscribe(self.run_id, after=self.start):
                self.frames.append(encode_frame(event))
                self._notify()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - handed to every client of the feed
            log.warning("the event feed of run %s failed: %s", self.run_id, exc)
            self.error = exc
        else:
            self.done = True
        self._notify()

    def _notify(self) -> None:
        """Wake the clients once per loop iteration, however many events arrived in it; with a
        crowd, at most every FEED_CROWD_WAKE_S: each wake costs a send per client, so fewer,
        fuller sends leave the loop time to take new clients."""
        if not self._wake_pending:
            self._wake_pending = True
            loop = asyncio.get_running_loop()
            if self.clients >= FEED_CROWD_CLIENTS and not self.done:
                loop.call_later(FEED_CROWD_WAKE_S, self._wake)
            else:
                loop.call_soon(self._wake)

    def _wake(self) -> None:
        self._wake_pending = False
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def changed(self) -> None:
        await self._changed.wait()

    def stop(self) -> None:
        self._task.cancel()


class Feeds:
    """The live feeds of one event loop, by (backend, run id)."""

    def __init__(self) -> None:
        self._feeds: dict[tuple[int, str], RunFeed] = {}

    def __len__(self) -> int:
        return len(self._feeds)

    def get(self, backend: EventBackend, run_id: str) -> RunFeed | None:
        return self._feeds.get((id(backend), run_id))

    def join(self, backend: EventBackend, run_id: str, after: int) -> RunFeed:
        """The run's feed, started when there is none; a private one when the shared feed
        starts after `after` (a client resuming further back than the crowd)."""
        key = (id(backend), run_id)
        feed = self._feeds.get(key)
        if feed is None or feed.error is not None:
            feed = self._feeds[key] = RunFeed(backend, run_id, after)
        elif after < feed.start:
            feed = RunFeed(backend, run_id, after)
        feed.clients += 1
        return feed

    def leave(self, feed: RunFeed) -> None:
        feed.clients -= 1
        if feed.clients == 0:
            feed.stop()
            key = (id(feed.backend), feed.run_id)
            if self._feeds.get(key) is feed:
                del self._feeds[key]


_by_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Feeds] = (
    weakref.WeakKeyDictionary()
)


def feeds() -> Feeds:
    """This event loop's feeds (one API process serves from one loop)."""
    loop = asyncio.get_running_loop()
    found = _by_loop.get(loop)
    if found is None:
        found = _by_loop[loop] = Feeds()
    return found


async def shared_frames(backend: EventBackend, run_id: str, after: int) -> AsyncIterator[bytes]:
    """SSE bytes of the run after `after`, through the run's shared feed; each item holds every
    frame that was waiting (up to FRAMES_PER_SEND), so a busy client catches up in few sends."""
    registry = feeds()
    feed = registry.join(backend, run_id, after)
    try:
        position = after - feed.start
        last_sent = time.monotonic()
        while True:
            available = len(feed.frames)
            if position < available:
                end = min(available, position + FRAMES_PER_SEND)
                chunk = b"".join(feed.frames[position:end])
                position = end
                yield chunk
                last_sent = time.monotonic()
                continue
            if feed.done:
                return
            if feed.error is not None:
                raise feed.error
            try:
                async with asyncio.timeout(max(0.0, last_sent + PING_S - time.monotonic())):
                    await feed.changed()
            except TimeoutError:
                yield PING_FRAME
                last_sent = time.monotonic()
    finally:
        registry.leave(feed)
