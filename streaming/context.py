"""StreamContext: how agent code emits events, and the current context for helpers."""

from __future__ import annotations

import asyncio
import contextvars
import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from streaming.errors import EventStoreUnavailable, RunCancelled
from streaming.events import (
    PAYLOAD_CLASSES,
    TERMINAL_TYPES,
    Event,
    _Payload,
    check_event_type,
    dumps,
    encode_basestring,
    envelope_head,
)
from streaming.filters import EventsFilter

if TYPE_CHECKING:
    from streaming.backends.base import EventBackend
    from streaming.streaming_backend import StreamingBackend

log = logging.getLogger(__name__)

_UNSET: Any = object()

_current: contextvars.ContextVar[StreamContext | None] = contextvars.ContextVar(
    "runcast_stream_context", default=None
)


class StreamContext:
    """Emits one run's events into an EventBackend (or, in queue mode, into itself).

    Emits are cheap and never wait for storage: the backend buffers them. `flush()` blocks until
    every event so far is durable. Once cancellation is requested, the next emit (or
    `check_cancelled()`) raises RunCancelled in the agent.
    """

    def __init__(
        self,
        run_id: str,
        *,
        backend: EventBackend | None = None,
        events: str | list[str] | EventsFilter | None = "all",
        attempt: int = 1,
        queue_mode: bool | None = None,
        start_seq: int | None = None,
        allow_terminal: bool = True,
        streaming_backend: StreamingBackend | None = None,
    ) -> None:
        self._run_id = run_id
        self._backend = backend
        self._filter = EventsFilter(events)
        self._attempt = attempt
        self._queue_mode = backend is None if queue_mode is None else queue_mode
        if not self._queue_mode and backend is None:
            raise ValueError("a StreamContext needs a backend unless it is in queue mode")
        if start_seq is None:
            start_seq = 0 if self._queue_mode else backend.last_seq(run_id)
        self._seq = start_seq
        self._start_seq = start_seq  # the log up to here is earlier attempts' (last_checkpoint)
        self._last_checkpoint: Any = _UNSET
        self._streaming = streaming_backend
        self._head = envelope_head(run_id)
        self._queue: list[Event] = []
        self._lock = threading.Lock()  # seq and append order; may wait on backpressure
        self._cancel_lock = threading.Lock()  # so a cancel never waits behind a blocked emit
        self._allow_terminal = allow_terminal
        self._ended = False  # its terminal event is emitted: nothing may follow it
        self._cancel = threading.Event()
        self._cancel_reason: str | None = None
        self._cancel_callbacks: list[Callable[[], None]] = []

    # -- properties -------------------------------------------------------------------------
    @property
    def run_id(self) -> str:
        return self._run_id

    @property
    def attempt(self) -> int:
        return self._attempt

    @property
    def queue_mode(self) -> bool:
        return self._queue_mode

    @property
    def events_filter(self) -> EventsFilter:
        return self._filter

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    @property
    def cancel_reason(self) -> str | None:
        return self._cancel_reason

    @property
    def last_seq(self) -> int:
        return self._seq

    @property
    def streaming_backend(self) -> StreamingBackend | None:
        """Offered every event first (see "Framework-native streaming"); settable."""
        return self._streaming

    @streaming_backend.setter
    def streaming_backend(self, backend: StreamingBackend | None) -> None:
        with self._lock:
            self._streaming = backend

    @property
    def last_checkpoint(self) -> dict[str, Any] | None:
        """On a retry, `{"name", "data"}` of the last checkpoint an earlier attempt emitted."""
        if self._last_checkpoint is _UNSET:
            found = None
            if self._attempt > 1 and self._backend is not None and self._start_seq > 0:
                event = self._backend.find_last(self._run_id, "checkpoint", self._start_seq)
                if event is not None:
                    found = {"name": event.data.get("name"), "data": event.data.get("data")}
            self._last_checkpoint = found
        return self._last_checkpoint

    # -- cancellation -----------------------------------------------------------------------
    def request_cancel(self, reason: str | None = None) -> None:
        """Mark the run cancelled: the agent's next emit or check raises RunCancelled."""
        with self._cancel_lock:
            if self._cancel.is_set():
                return
            self._cancel_reason = reason
            self._cancel.set()
            callbacks = list(self._cancel_callbacks)
        for callback in callbacks:
            callback()

    def on_cancel(self, callback: Callable[[], None]) -> None:
        """Call `callback` (from any thread) when cancellation is requested."""
        with self._cancel_lock:
            if not self._cancel.is_set():
                self._cancel_callbacks.append(callback)
                return
        callback()

    def check_cancelled(self) -> None:
        if self._cancel.is_set():
            raise RunCancelled(self._cancel_reason)

    # -- the one emit path ------------------------------------------------------------------
    def _emit(
        self,
        event_type: str,
        data: dict[str, Any],
        *,
        runtime: bool = False,
        data_json: str | None = None,
    ) -> Event | None:
        if not runtime:
            if self._cancel.is_set():
                raise RunCancelled(self._cancel_reason)
            if event_type in TERMINAL_TYPES and not self._allow_terminal:
                raise RuntimeError(
                    f"{event_type!r} is emitted by the runtime: return a value, raise, or "
                    "let the run be cancelled instead"
                )
        if not self._filter.allows(event_type):
            return None
        if data_json is None:
            data_json = dumps(data)  # raises in the agent for non-JSON data, before taking a seq
        if not data_json.isascii():
            data_json.encode()  # a lone surrogate raises here, not later in the writer
        with self._lock:
            if self._ended:  # one terminal event per run, and it is last
                raise RuntimeError(f"run {self._run_id} has ended: no {event_type!r} event may "
                                   "follow its terminal event")
            event = Event.build(self._run_id, self._seq + 1, event_type, data_json, data,
                                self._head)
            if not self._queue_mode:
                # First, and the seq taken only once it is in: an append that raises (a full
                # buffer past the outage limit) takes no seq, and offers the event to no one.
                # The log is complete whatever the offer does.
                self._backend.append(event)
                self._seq += 1
                if self._streaming is not None:
                    self._offer(event)
            else:
                self._seq += 1
                if not (self._streaming is not None and self._offer(event)):
                    self._queue.append(event)
            self._ended = event_type in TERMINAL_TYPES
        return event

    def _offer(self, event: Event) -> bool:
        """Offer `event` to the streaming backend: True when it took it."""
        backend = self._streaming
        try:
            return bool(backend.is_available() and backend.emit(event))
        except Exception:  # a failing streaming backend never fails the agent
            log.warning("streaming backend %s failed on event %s of run %s; treated as "
                        "unavailable", getattr(backend, "name", backend), event.seq,
                        self._run_id, exc_info=True)
            return False

    def _requeue(self, event: Event) -> None:
        """Queue (queue mode) an event of this run the streaming backend accepted earlier and
        that came back (LangGraph's custom stream): it is then queued once, where it belongs."""
        if self._queue_mode:
            with self._lock:
                self._queue.append(event)

    def _emit_payload(self, payload: _Payload, *, runtime: bool = False) -> Event | None:
        return self._emit(payload.event_type(), payload.event_data(), runtime=runtime)

    def sync_emit(self, event: str | _Payload, /, **data: Any) -> Event | None:
        """`sync_emit("custom:found", n=3)`, `sync_emit("progress", progress=0.5)` or an object."""
        if isinstance(event, _Payload):
            if data:
                raise TypeError("emit(event_object) takes no keyword data")
            return self._emit_payload(event)
        event_type = check_event_type(event)
        cls = PAYLOAD_CLASSES.get(event_type)
        if cls is not None:
            return self._emit_payload(cls(**data))
        return self._emit(event_type, data)

    # -- sync twins -------------------------------------------------------------------------
    def sync_emit_progress(
        self, step: str | None = None, progress: float = 0.0, message: str | None = None
    ) -> Event | None:
        progress = float(progress)
        if not 0.0 <= progress <= 1.0:
            raise ValueError(f"progress must be between 0.0 and 1.0, not {progress}")
        return self._emit("progress", {"step": step, "progress": progress, "message": message})

    def sync_emit_update(self, text: str, content: dict[str, Any] | None = None) -> Event | None:
        return self._emit("update", {"text": text, "content": {} if content is None else content})

    def sync_checkpoint(self, name: str, data: Any = None) -> Event | None:
        return self._emit("checkpoint", {"name": name, "data": data})

    def sync_emit_token(self, content: str, finish_reason: str | None = None) -> Event | None:
        data = {"content": content, "finish_reason": finish_reason}
        if finish_reason is None and type(content) is str:  # the hottest path: skip the encoder
            data_json = '{"content":' + encode_basestring(content) + ',"finish_reason":null}'
            return self._emit("token", data, data_json=data_json)
        return self._emit("token", data)

    def sync_emit_step(
        self,
        node_name: str,
        duration_ms: float | None = None,
        input_keys: list[str] | None = None,
        output_keys: list[str] | None = None,
    ) -> Event | None:
        return self._emit(
            "step",
            {
                "node_name": node_name,
                "duration_ms": duration_ms,
                "input_keys": list(input_keys or []),
                "output_keys": list(output_keys or []),
            },
        )

    def sync_emit_heartbeat(self) -> Event | None:
        return self._emit("heartbeat", {})

    # -- runtime events ---------------------------------------------------------------------
    def sync_emit_started(
        self, agent: str | None = None, attempt: int | None = None, worker: str | None = None
    ) -> Event | None:
        data = {"agent": agent, "attempt": attempt or self._attempt, "worker": worker}
        return self._emit("started", data, runtime=True)

    def sync_emit_complete(
        self, output: Any = None, latency_seconds: float | None = None, metadata: dict | None = None
    ) -> Event | None:
        self._check_terminal_allowed("complete")
        data = {"output": output, "latency_seconds": latency_seconds, "metadata": metadata or {}}
        return self._emit("complete", data, runtime=True)

    def sync_emit_error(
        self, error: str, code: str | None = None, details: dict | None = None
    ) -> Event | None:
        self._check_terminal_allowed("error")
        data = {"error": error, "code": code, "details": details or {}}
        return self._emit("error", data, runtime=True)

    def sync_emit_cancelled(self, reason: str | None = None) -> Event | None:
        self._check_terminal_allowed("cancelled")
        return self._emit("cancelled", {"reason": reason}, runtime=True)

    def _check_terminal_allowed(self, event_type: str) -> None:
        if not self._allow_terminal:
            raise RuntimeError(f"{event_type!r} is emitted by the runtime in a managed run")

    # -- async methods (emits never wait for storage, so they are thin) ---------------------
    async def emit(self, event: str | _Payload, /, **data: Any) -> Event | None:
        return self.sync_emit(event, **data)

    async def emit_started(self, agent=None, attempt=None, worker=None) -> Event | None:
        return self.sync_emit_started(agent, attempt, worker)

    async def emit_progress(self, step=None, progress=0.0, message=None) -> Event | None:
        return self.sync_emit_progress(step, progress, message)

    async def emit_update(self, text: str, content: dict | None = None) -> Event | None:
        return self.sync_emit_update(text, content)

    async def checkpoint(self, name: str, data: Any = None) -> Event | None:
        return self.sync_checkpoint(name, data)

    async def emit_token(self, content: str, finish_reason: str | None = None) -> Event | None:
        return self.sync_emit_token(content, finish_reason)

    async def emit_step(self, node_name, duration_ms=None, input_keys=None, output_keys=None):
        return self.sync_emit_step(node_name, duration_ms, input_keys, output_keys)

    async def emit_heartbeat(self) -> Event | None:
        return self.sync_emit_heartbeat()

    async def emit_complete(self, output=None, latency_seconds=None, metadata=None):
        return self.sync_emit_complete(output, latency_seconds, metadata)

    async def emit_error(self, error: str, code=None, details=None) -> Event | None:
        return self.sync_emit_error(error, code, details)

    async def emit_cancelled(self, reason: str | None = None) -> Event | None:
        return self.sync_emit_cancelled(reason)

    # -- storage ----------------------------------------------------------------------------
    def flush(self, timeout: float | None = None) -> None:
        """Block until every event emitted so far is durable (raises EventStoreUnavailable, also
        when the store refused some of this run's events: a flush never passes over a loss)."""
        if not self._queue_mode:
            self._backend.flush(timeout)
            reason = self._backend.refusal(self._run_id)
            if reason is not None:
                raise EventStoreUnavailable(reason)

    async def aflush(self, timeout: float | None = None) -> None:
        if not self._queue_mode:
            await asyncio.to_thread(self.flush, timeout)

    def drop_unwritten(self, reason: str) -> None:
        """Drop this run's events not written yet and refuse its later emits (they raise
        EventStoreUnavailable): for a run being failed because the event store took no events
        for too long.

        Dropped rather than written first: the run's terminal event is numbered after the last
        event in the store as it is written, so events still waiting would either take its seq
        (refused as duplicates) or land after it. Dropping them keeps the log a gap-free prefix
        ending with the terminal event, and does not make the failure wait for the writer to
        drain (behind other runs' events) once the store is back. Their seqs were never in the
        log, so none is reused there.
        """
        if not self._queue_mode:
            self._backend.drop_unwritten(self._run_id, reason)

    def drain_queued_events(self) -> list[Event]:
        with self._lock:
            events, self._queue = self._queue, []
        return events

    def __repr__(self) -> str:
        return f"StreamContext(run_id={self._run_id!r}, seq={self._seq})"


# -- the current context ---------------------------------------------------------------------
def get_current_context() -> StreamContext | None:
    return _current.get()


def set_current_context(ctx: StreamContext | None) -> contextvars.Token:
    """Make `ctx` current; pair with `reset_current_context(token)`."""
    return _current.set(ctx)


def reset_current_context(token: contextvars.Token) -> None:
    _current.reset(token)


@contextmanager
def current_context(ctx: StreamContext | None) -> Iterator[StreamContext | None]:
    token = _current.set(ctx)
    try:
        yield ctx
    finally:
        _current.reset(token)


def emit(event: str | _Payload, /, **data: Any) -> Event | None:
    """Emit into the current run from anywhere; a no-op (returns None) when no run is active."""
    ctx = _current.get()
    if ctx is None:
        return None
    return ctx.sync_emit(event, **data)


def emit_update(text: str, content: dict[str, Any] | None = None) -> Event | None:
    """Emit an `update` event into the current run; a no-op when no run is active."""
    ctx = _current.get()
    if ctx is None:
        return None
    return ctx.sync_emit_update(text, content)


@contextmanager
def capture_events(
    run_id: str = "capture", events: str | list[str] | None = "all"
) -> Iterator[list[Event]]:
    """For tests of agent code: events emitted inside the block land in the yielded list."""
    from streaming.backends.memory import MemoryEventBackend

    backend = MemoryEventBackend()
    ctx = StreamContext(run_id, backend=backend, events=events)
    with current_context(ctx):
        yield backend.log(run_id)
