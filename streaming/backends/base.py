"""EventBackend: the seam between a StreamContext and where events are kept."""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager

from streaming.constants import SUBSCRIBE_RESYNC_S
from streaming.events import Event

# Put on a live queue when deliveries may have been missed (a reconnect): read the log again.
RESYNC = object()


class EventBackend(ABC):
    """Append events, read them after a `seq`, subscribe from a `seq`, expire a run's log."""

    @abstractmethod
    def append(self, event: Event) -> None:
        """Queue one event for storage; returns without waiting for it to be durable."""

    @abstractmethod
    def flush(self, timeout: float | None = None) -> None:
        """Block until every appended event is durable, or dropped with its run refused (the
        run's context raises then: see `refusal`)."""

    async def aflush(self, timeout: float | None = None) -> None:
        await asyncio.to_thread(self.flush, timeout)

    def refusal(self, run_id: str) -> str | None:
        """Why the run's events are no longer taken (some of them were lost), None while they
        are: a backend that can lose events says so instead of reporting them durable."""
        return None

    def drop_unwritten(self, run_id: str, reason: str) -> None:
        """Drop the run's events not durable yet and refuse its later ones (`refusal` then gives
        `reason`). A backend whose appends are durable at once has nothing to drop, and no
        outage to fail a run on."""

    @abstractmethod
    def read(self, run_id: str, after: int = 0, limit: int | None = None) -> list[Event]:
        """Stored events of a run with `seq > after`, in order."""

    async def aread(self, run_id: str, after: int = 0, limit: int | None = None) -> list[Event]:
        return self.read(run_id, after, limit)

    async def alast_event(self, run_id: str) -> Event | None:
        """The stored event with the highest `seq`, None when the run has none."""
        events = await self.aread(run_id, 0)
        return events[-1] if events else None

    def find_last(self, run_id: str, event_type: str, up_to_seq: int) -> Event | None:
        """The stored event of `event_type` with the highest `seq <= up_to_seq`, or None."""
        for event in reversed(self.read(run_id, 0)):
            if event.seq <= up_to_seq and event.type == event_type:
                return event
        return None

    @abstractmethod
    def last_seq(self, run_id: str) -> int:
        """The highest stored `seq` of a run, 0 when it has none."""

    @abstractmethod
    def expire(self, run_id: str, ttl_s: float) -> None:
        """Drop the run's log `ttl_s` seconds from now."""

    @abstractmethod
    def live(self, run_id: str) -> AbstractAsyncContextManager[asyncio.Queue]:
        """While entered, batches (lists of Event) of the run arrive on the queue, or RESYNC.

        The subscription is active on entry, so anything stored afterwards is delivered.
        """

    def close(self) -> None:
        """Release connections and threads."""

    async def aclose(self) -> None:
        self.close()

    async def subscribe(self, run_id: str, after: int = 0) -> AsyncIterator[Event]:
        """Replay the stored events after `after`, then live ones, with no gap and no duplicate,
        ending after the terminal event."""
        async with self.live(run_id) as queue:
            last = after
            replay = await self.aread(run_id, last)
            if not replay:  # resuming at or past the end of a finished run: nothing will come
                tail = await self.alast_event(run_id)
                if tail is not None and tail.is_terminal and tail.seq <= after:
                    return
            for event in replay:
                yield event
                last = event.seq
                if event.is_terminal:
                    return
            while True:
                item = await _next_batch(queue)
                batch = [] if item is RESYNC else [e for e in item if e.seq > last]
                if item is RESYNC or (batch and batch[0].seq != last + 1):
                    batch = await self.aread(run_id, last)  # fill a gap from the log
                for event in batch:
                    yield event
                    last = event.seq
                    if event.is_terminal:
                        return


async def _next_batch(queue: asyncio.Queue) -> object:
    """Every batch already waiting on a live queue as one list (RESYNC when one of them is, or
    when nothing came for SUBSCRIBE_RESYNC_S). Taken without a wait when some are waiting: a
    subscriber keeps pace with the live messages however busy its event loop is."""
    if queue.empty():
        try:
            async with asyncio.timeout(SUBSCRIBE_RESYNC_S):
                first = await queue.get()
        except TimeoutError:
            return RESYNC
    else:
        first = queue.get_nowait()
    if queue.empty():
        return first
    items = [first]
    while not queue.empty():
        items.append(queue.get_nowait())
    if any(item is RESYNC for item in items):
        return RESYNC
    return [event for item in items for event in item]
