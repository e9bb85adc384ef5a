"""Streaming backends: where a run's events are offered first, before the queue (queue mode).

A StreamContext with a streaming backend offers it every event that passes the filter, right
after the event takes its seq. In queue mode an event the backend accepted is not queued; with an
event backend attached the event goes to the durable log whatever the streaming backend does. A
backend that raises counts as unavailable for that event.
"""

from __future__ import annotations

import threading
from typing import Protocol, runtime_checkable

from streaming.events import Event


@runtime_checkable
class StreamingBackend(Protocol):
    """What `StreamContext(..., streaming_backend=...)` accepts."""

    name: str

    def is_available(self) -> bool:
        """Whether events can be offered now."""
        ...

    def emit(self, event: Event) -> bool:
        """Take `event`; True when it was accepted, False when refused."""
        ...


class QueueBackend(list):
    """Accepts every event into itself (a list); `drain()` takes them out."""

    name = "queue"

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()

    def is_available(self) -> bool:
        return True

    def emit(self, event: Event) -> bool:
        with self._lock:
            self.append(event)
        return True

    @property
    def events(self) -> list[Event]:
        return list(self)

    def drain(self) -> list[Event]:
        """The accepted events so far, oldest first; the backend is empty after."""
        with self._lock:
            events = list(self)
            self.clear()
        return events

    def __repr__(self) -> str:
        return f"QueueBackend({len(self)} events)"
