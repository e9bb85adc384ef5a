"""The event writer: a bounded buffer drained into Redis by one background thread.

An emit only appends to the buffer (blocking while it is full: backpressure, never loss). The
thread writes batches with one Lua call per WRITE_CALL_RUNS runs, which adds each event to its
run's stream under the id `0-<seq>` (so a retried batch cannot duplicate an event), PUBLISHes each
run's events and sets its stream's expiry. A thousand runs emitting a token each cost one call per
hundred, not one each. During an outage the thread keeps the events and retries; `flush()`
raises EventStoreUnavailable once the outage is older than the limit.

A refusal that says Redis cannot write for now (OOM under maxmemory, READONLY after a failover,
...) is an outage too: the events are kept and retried. Any other refusal (WRONGTYPE: the run's
key is not a stream) is that run's alone, and retrying would hold every other run behind it: the
run's events are dropped and refused from then on, and the run is told (`refusal(run_id)`,
EventStoreUnavailable from its emits and its context's flush). A refused event is never counted
as written.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import weakref

import redis
from redis.backoff import NoBackoff
from redis.exceptions import (
    ClusterDownError,
    NoScriptError,
    OutOfMemoryError,
    ReadOnlyError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

from streaming.constants import (
    EVENT_FIELD,
    EVENTS_CHANNEL,
    EVENTS_KEY,
    REFUSED_RUNS_KEPT,
    RETRY_BACKOFF_MAX_S,
    UNFINISHED_RUN_TTL_S,
    WRITE_BATCH_BYTES,
    WRITE_BATCH_EVENTS,
    WRITE_CALL_RUNS,
    WRITER_SOCKET_TIMEOUT_S,
)
from streaming.errors import EventStoreUnavailable
from streaming.events import Event, dumps
from streaming.lua_scripts import EVENTS_LIBRARY, build_script, read_lua

log = logging.getLogger(__name__)

TRANSIENT_ERRORS = (RedisConnectionError, RedisTimeoutError, OSError)

# Refusals that say Redis cannot write for now, not that the run's key is wrong: an outage. Error
# codes as Redis sends them (in a script's answer), and redis-py's classes, which drop the code.
RETRIED_REFUSALS = ("OOM", "READONLY", "BUSY", "LOADING", "MASTERDOWN", "MISCONF", "NOREPLICAS",
                    "TRYAGAIN", "CLUSTERDOWN")
RETRIED_ERRORS = (OutOfMemoryError, ReadOnlyError, TryAgainError, ClusterDownError,
                  NoScriptError)  # NOSCRIPT even after loading it: the next attempt loads it again


def refused_for_now(error: str | Exception) -> bool:
    """Whether a refusal is retried like an outage (else it is the run's own, for good)."""
    return isinstance(error, RETRIED_ERRORS) or str(error).startswith(RETRIED_REFUSALS)


# KEYS and ARGV: per run, its stream and record, and five arguments; see streaming/scripts/append.lua.
APPEND_SCRIPT = build_script([EVENTS_LIBRARY, read_lua("streaming", "append.lua")],
                             {"EVENT_FIELD": EVENT_FIELD})


_writers: weakref.WeakSet[EventWriter] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    """A forked child (a Celery prefork worker) has no writer thread: start afresh."""
    for writer in list(_writers):
        writer._reset()


os.register_at_fork(after_in_child=_after_fork_in_child)


class EventWriter:
    """Owns the buffer and the writer thread of one RedisEventBackend (per process)."""

    def __init__(
        self,
        url: str,
        client_kwargs: dict,
        *,
        max_events: int,
        ttl_s: int,
        buffer_events: int,
        outage_limit_s: float,
        progress_key: str | None = None,
    ) -> None:
        self.url = url
        self.progress_key = progress_key
        self.max_events = max_events
        self.ttl_s = ttl_s
        self.buffer_events = buffer_events
        self.outage_limit_s = outage_limit_s
        # Its own connection, without redis-py's retries: this thread retries, and knows when an
        # outage began. Named, so `CLIENT LIST` shows it.
        self._client_kwargs = {
            "socket_timeout": WRITER_SOCKET_TIMEOUT_S,
            **client_kwargs,
            "retry": Retry(NoBackoff(), 0),
            "client_name": "runcast-event-writer",
        }
        self._reset()

    def _reset(self) -> None:
        self._pid = os.getpid()
        self._client = redis.Redis.from_url(self.url, **self._client_kwargs)
        self._script = self._client.register_script(APPEND_SCRIPT)
        self._cond = threading.Condition(threading.Lock())
        self._buffer: list[Event] = []  # waiting; emitters append, the thread takes the front
        self._inflight: list[Event] = []  # taken by the thread, kept until written
        self._writing = False  # the thread is writing `_inflight`: only it may change that list
        self._enqueued = 0
        self._settled = 0  # events written, or dropped with their run refused (never silently)
        self._refused: dict[str, str] = {}  # run -> why its events are refused, oldest first
        self._outage_since: float | None = None
        self._outage_error = ""
        self._closing = False
        self._thread: threading.Thread | None = None
        _writers.add(self)

    # -- the emit side ----------------------------------------------------------------------
    def append(self, event: Event) -> None:
        with self._cond:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._write_forever, name="runcast-event-writer", daemon=True
                )
                self._thread.start()
            while True:
                if self._refused and event.run_id in self._refused:
                    raise EventStoreUnavailable(self._refused[event.run_id])
                if len(self._buffer) + len(self._inflight) < self.buffer_events:
                    break
                self._raise_if_outage_too_long()  # backpressure, not loss
                self._cond.wait(0.5)
            self._buffer.append(event)
            self._enqueued += 1
            if len(self._buffer) == 1:
                self._cond.notify_all()

    def flush(self, timeout: float | None = None) -> None:
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            target = self._enqueued
            while self._settled < target:
                self._raise_if_outage_too_long()
                wait = 0.5 if deadline is None else min(0.5, deadline - time.monotonic())
                if wait <= 0:
                    raise TimeoutError(f"events not durable within {timeout} s")
                self._cond.wait(wait)

    def pending_last_seq(self, run_id: str) -> int:
        """The highest seq of the run still waiting to be written, 0 when none."""
        with self._cond:
            pending = self._inflight + self._buffer
        return max((e.seq for e in pending if e.run_id == run_id), default=0)

    def refusal(self, run_id: str) -> str | None:
        """Why the run's events are refused (some were lost), None while they are taken."""
        return self._refused.get(run_id)

    def drop_run(self, run_id: str, reason: str) -> None:
        """Drop the run's events not written yet and refuse its later ones (with `reason`).

        For a run being failed because its events could not be written: its terminal event is
        then numbered after what is in Redis and stays last. A write of the run's events under
        way is waited for (it lands before the terminal event, or is retried without them).
        """
        with self._cond:
            self._refused[run_id] = reason  # first: its emits waiting for room give up now
            self._cond.notify_all()
            while (self._writing and any(e.run_id == run_id for e in self._inflight)
                   and self._thread is not None and self._thread.is_alive()):
                self._cond.wait(0.5)
            self._refuse(run_id, reason)

    def _refuse(self, run_id: str, reason: str) -> None:
        """(Holding the lock, the thread not writing.) Remember the run as refused and settle
        its waiting events: a flush of other runs does not wait for them."""
        self._refused[run_id] = reason
        while len(self._refused) > REFUSED_RUNS_KEPT:
            del self._refused[next(iter(self._refused))]
        for name in ("_buffer", "_inflight"):
            events = getattr(self, name)
            kept = [e for e in events if e.run_id != run_id]
            if len(kept) < len(events):  # else untouched: a batch being written stays that list
                self._settled += len(events) - len(kept)
                setattr(self, name, kept)

    def _raise_if_outage_too_long(self) -> None:
        since = self._outage_since
        if since is not None and time.monotonic() - since > self.outage_limit_s:
            raise EventStoreUnavailable(
                f"the event store at {self.url.split('@')[-1]} has taken no events for more "
                f"than {self.outage_limit_s:g} s ({self._outage_error})"
            )

    def close(self) -> None:
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        thread = self._thread
        if thread is not None and thread.is_alive() and self._pid == os.getpid():
            thread.join(timeout=5)
        self._client.close()

    # -- the writer thread ------------------------------------------------------------------
    def _next_batch(self) -> list[Event] | None:
        """The events in flight (a failed batch is retried as it was), else the next ones."""
        with self._cond:
            if not self._inflight:
                while not self._buffer and not self._closing:
                    self._cond.wait()
                if not self._buffer:
                    return None
                self._inflight = self._buffer[:WRITE_BATCH_EVENTS]
                del self._buffer[:WRITE_BATCH_EVENTS]
            batch = self._inflight
            self._writing = True
        size = 0
        for i, event in enumerate(batch):  # outside the lock: emits go on meanwhile
            size += len(event.to_json())
            if size >= WRITE_BATCH_BYTES and i + 1 < len(batch):
                with self._cond:  # too big: the rest goes back to the front
                    self._buffer[0:0] = batch[i + 1 :]
                    del batch[i + 1 :]
                break
        return batch

    def _write_forever(self) -> None:
        backoff = 0.01
        while (batch := self._next_batch()) is not None:
            try:
                refused, retry = self._write(batch)
            except TRANSIENT_ERRORS as exc:
                refused, retry = {}, f"unreachable: {exc}"
            except Exception as exc:  # never let the writer die; the runs are told
                log.exception("event write failed")
                refused = dict.fromkeys({e.run_id for e in batch}, f"event write failed: {exc}")
                retry = None
            with self._cond:
                self._writing = False
                for run_id, reason in refused.items():
                    self._refuse(run_id, reason)
                if retry is None:  # written (or refused for good): the batch is done
                    self._settled += len(self._inflight)
                    self._inflight = []
                    if self._outage_since is not None:
                        log.warning("event store writable again")
                        self._outage_since = None
                elif self._outage_since is None:
                    self._outage_since = time.monotonic()
                    log.warning("event store not writable (%s); holding events", retry)
                if retry is not None:
                    self._outage_error = retry
                self._cond.notify_all()
            if retry is None:
                backoff = 0.01
            else:
                time.sleep(backoff)
                backoff = min(backoff * 2, RETRY_BACKOFF_MAX_S)

    def _write(self, batch: list[Event]) -> tuple[dict[str, str], str | None]:
        """Write the batch: (runs refused for good -> why, a refusal to retry the batch on)."""
        by_run: dict[str, list[Event]] = {}
        for event in batch:
            by_run.setdefault(event.run_id, []).append(event)
        runs = list(by_run.items())
        calls = [runs[i:i + WRITE_CALL_RUNS] for i in range(0, len(runs), WRITE_CALL_RUNS)]
        results = self._execute(calls)
        if any(isinstance(r, NoScriptError) for r in results):  # a restarted or flushed Redis
            self._client.script_load(APPEND_SCRIPT)
            results = self._execute(calls)
        refused: dict[str, str] = {}
        retry = None
        for group, result in zip(calls, results, strict=True):
            if isinstance(result, TRANSIENT_ERRORS):
                raise result
            if isinstance(result, Exception):  # the whole call: every run of it
                reasons: list[tuple[str, str | Exception]] = [(r, result) for r, _ in group]
            else:  # per run: added, refused
                reasons = [(run_id, r.decode(errors="replace"))
                           for (run_id, _), r in zip(group, result[1::2], strict=True) if r]
            for run_id, error in reasons:
                text = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
                if refused_for_now(error):
                    retry = f"refused: {text}"
                else:
                    log.error("event write refused for run %s: %s", run_id, text)
                    refused[run_id] = f"the event store refused events of run {run_id}: {text}"
        return refused, retry

    def _execute(self, calls: list[list[tuple[str, list[Event]]]]) -> list:
        """One script call per group of runs, all in one pipeline."""
        pipe = self._client.pipeline(transaction=False)
        for runs in calls:
            keys: list[str] = []
            args: list = [self.max_events]
            for run_id, events in runs:
                stream = EVENTS_KEY.format(run_id=run_id)
                progress = ""
                if self.progress_key is not None:
                    latest = [e for e in events if e.type == "progress"]
                    if latest:
                        progress = dumps(latest[-1].data)
                record = stream if not progress else self.progress_key.format(run_id=run_id)
                keys += (stream, record)
                envelopes = "\n".join([e.to_json() for e in events])
                if envelopes.count("\n") != len(events) - 1:  # JSON whitespace: a space is the same
                    envelopes = "\n".join([e.to_json().replace("\n", " ") for e in events])
                args += (
                    self.ttl_s if any(e.is_terminal for e in events) else UNFINISHED_RUN_TTL_S,
                    EVENTS_CHANNEL.format(run_id=run_id),
                    progress,
                    " ".join([str(e.seq) for e in events]),
                    envelopes,
                )
            pipe.evalsha(self._script.sha, len(keys), *keys, *args)
        return pipe.execute(raise_on_error=False)
