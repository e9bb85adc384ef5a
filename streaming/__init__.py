"""runcast's agent-facing library: events, StreamContext, emit helpers, filters, backends.

Imports pydantic and redis only, never celery or fastapi.
"""

from streaming.backends import EventBackend, MemoryEventBackend, RedisEventBackend
from streaming.context import (
    StreamContext,
    capture_events,
    current_context,
    emit,
    emit_update,
    get_current_context,
    reset_current_context,
    set_current_context,
)
from streaming.errors import EventStoreUnavailable, RunCancelled, RuncastError
from streaming.events import (
    CancelledEvent,
    CheckpointEvent,
    CompleteEvent,
    CustomEvent,
    ErrorEvent,
    Event,
    HeartbeatEvent,
    IntermittentUpdateEvent,
    ProgressEvent,
    StartedEvent,
    StepEvent,
    TextDeltaEvent,
    TokenEvent,
    UpdateEvent,
)
from streaming.filters import EventsFilter
from streaming.streaming_backend import QueueBackend, StreamingBackend

__all__ = [
    "CancelledEvent", "CheckpointEvent", "CompleteEvent", "CustomEvent", "ErrorEvent", "Event",
    "EventBackend", "EventStoreUnavailable", "EventsFilter", "HeartbeatEvent",
    "IntermittentUpdateEvent", "MemoryEventBackend", "ProgressEvent", "QueueBackend",
    "RedisEventBackend", "RunCancelled", "RuncastError", "StartedEvent", "StepEvent",
    "StreamContext", "StreamingBackend",
    "TextDeltaEvent", "TokenEvent", "UpdateEvent", "capture_events", "current_context", "emit",
    "emit_update", "get_current_context", "reset_current_context", "set_current_context",
]
