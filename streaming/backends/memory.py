"""MemoryEventBackend: process-local, for tests, scripts and embedded mode."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from streaming.backends.base import EventBackend
from streaming.events import Event


class MemoryEventBackend(EventBackend):
    """Events are durable as soon as they are appended; live delivery crosses threads."""

    def __init__(self) -> None:
        self._logs: dict[str, list[Event]] = {}
        self._expires: dict[str, float] = {}  # run_id -> monotonic deadline
        self._next_purge = 0.0  # monotonic
        self._watchers: dict[str, set[tuple[asyncio.AbstractEventLoop, asyncio.Queue]]] = {}
        self._lock = threading.RLock()

    def log(self, run_id: str) -> list[Event]:
        """The run's live list of events (created when absent)."""
        with self._lock:
            self._purge()
            return self._logs.setdefault(run_id, [])

    def append(self, event: Event) -> None:
        self.append_many([event])

    def append_many(self, events: list[Event]) -> None:
        with self._lock:
            self._purge()
            by_run: dict[str, list[Event]] = {}
            for event in events:
                log = self._logs.setdefault(event.run_id, [])
                if log and event.seq <= log[-1].seq:
                    continue  # already stored (a fenced retry): seq is never reused
                log.append(event)
                by_run.setdefault(event.run_id, []).append(event)
            deliveries = [
                (loop, queue, batch)
                for run_id, batch in by_run.items()
                for loop, queue in self._watchers.get(run_id, ())
            ]
        for loop, queue, batch in deliveries:
            try:
                loop.call_soon_threadsafe(queue.put_nowait, batch)
            except RuntimeError:
                pass  # that subscriber's loop is closed

    def flush(self, timeout: float | None = None) -> None:
        return None

    def read(self, run_id: str, after: int = 0, limit: int | None = None) -> list[Event]:
        with self._lock:
            self._purge()
            events = [e for e in self._logs.get(run_id, ()) if e.seq > after]
        return events if limit is None else events[:limit]

    def last_seq(self, run_id: str) -> int:
        with self._lock:
            self._purge()
            log = self._logs.get(run_id)
            return log[-1].seq if log else 0

    async def alast_event(self, run_id: str) -> Event | None:
        with self._lock:
            self._purge()
            log = self._logs.get(run_id)
            return log[-1] if log else None

    def expire(self, run_id: str, ttl_s: float) -> None:
        with self._lock:
            self._expires[run_id] = time.monotonic() + ttl_s

    def _purge(self) -> None:
        now = time.monotonic()
        if not self._expires or now < self._next_purge:
            return
        self._next_purge = now + 0.1  # at most ten scans a second, however many appends
        for run_id in [r for r, t in self._expires.items() if t <= now]:
            self._expires.pop(run_id, None)
            self._logs.pop(run_id, None)

    @asynccontextmanager
    async def live(self, run_id: str) -> AsyncIterator[asyncio.Queue]:
        entry = (asyncio.get_running_loop(), asyncio.Queue())
        with self._lock:
            self._watchers.setdefault(run_id, set()).add(entry)
        try:
            yield entry[1]
        finally:
            with self._lock:
                watchers = self._watchers.get(run_id)
                if watchers is not None:
                    watchers.discard(entry)
                    if not watchers:
                        del self._watchers[run_id]
