"""RedisEventBackend: one Redis Stream per run as the durable log, PUBLISH for live delivery."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
import time
import weakref
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import redis
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from streaming.backends.base import EventBackend
from streaming.backends.hub import PubSubHub
from streaming.constants import (
    DEFAULT_MAX_EVENTS,
    DEFAULT_RUN_TTL_S,
    EVENT_FIELD,
    EVENTS_CHANNEL,
    EVENTS_KEY,
    OUTAGE_LIMIT_S,
    RETRY_BACKOFF_MAX_S,
    UNFINISHED_RUN_TTL_S,
    WRITE_BATCH_EVENTS,
    WRITE_BUFFER_EVENTS,
)
from streaming.errors import EventStoreUnavailable
from streaming.events import Event

log = logging.getLogger(__name__)

TRANSIENT_ERRORS = (RedisConnectionError, RedisTimeoutError, OSError)


def events_key(run_id: str) -> str:
    return EVENTS_KEY.format(run_id=run_id)


def events_channel(run_id: str) -> str:
    return EVENTS_CHANNEL.format(run_id=run_id)


def seq_of(stream_id: bytes | str) -> int:
    """Stream entry ids are `0-<seq>`: the log is ordered and deduplicated by seq."""
    stream_id = stream_id.decode() if isinstance(stream_id, bytes) else stream_id
    return int(stream_id.partition("-")[2])


def decode_batch(raw: bytes | str) -> list[Event]:
    """A published message is a JSON array of envelopes."""
    return [Event.model_construct(**fields) for fields in json.loads(raw)]


def _events_from_entries(entries) -> list[Event]:
    return [Event.from_json(fields[EVENT_FIELD.encode()]) for _id, fields in entries]


class _LoopState:
    """What the backend holds per event loop: an async client and the pub/sub hub."""

    def __init__(self, url: str, client_kwargs: dict) -> None:
        self.client = aioredis.Redis.from_url(url, **client_kwargs)
        self.hub = PubSubHub(self.client, decode_batch)


class RedisEventBackend(EventBackend):
    """Buffered, pipelined writes from a background thread; async reads and subscriptions."""

    def __init__(
        self,
        url: str,
        *,
        max_events: int = DEFAULT_MAX_EVENTS,
        ttl_s: int = DEFAULT_RUN_TTL_S,
        buffer_events: int = WRITE_BUFFER_EVENTS,
        outage_limit_s: float = OUTAGE_LIMIT_S,
        client_kwargs: dict | None = None,
    ) -> None:
        self.url = url
        self.max_events = max_events
        self.ttl_s = ttl_s
        self.buffer_events = buffer_events
        self.outage_limit_s = outage_limit_s
        self._client_kwargs = {"socket_connect_timeout": 2, "health_check_interval": 30}
        self._client_kwargs.update(client_kwargs or {})
        self.client = redis.Redis.from_url(url, **self._client_kwargs)
        self._loops: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopState] = (
            weakref.WeakKeyDictionary()
        )
        self._reset_writer()

    @classmethod
    def from_url(cls, url: str, **options) -> RedisEventBackend:
        return cls(url, **options)

    def _reset_writer(self) -> None:
        self._pid = os.getpid()
        self._cond = threading.Condition()
        self._buffer: deque[Event] = deque()
        self._enqueued = 0
        self._written = 0
        self._outage_since: float | None = None
        self._closing = False
        self._writer: threading.Thread | None = None

    # -- writing ----------------------------------------------------------------------------
    def append(self, event: Event) -> None:
        if self._pid != os.getpid():  # forked (a Celery prefork child): start afresh
            self._reset_writer()
        with self._cond:
            if self._writer is None:
                self._writer = threading.Thread(
                    target=self._write_forever, name="runcast-event-writer", daemon=True
                )
                self._writer.start()
            while len(self._buffer) >= self.buffer_events:  # backpressure, not loss
                self._raise_if_outage_too_long()
                self._cond.wait(0.5)
            self._buffer.append(event)
            self._enqueued += 1
            if len(self._buffer) == 1:
                self._cond.notify_all()

    def flush(self, timeout: float | None = None) -> None:
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            target = self._enqueued
            while self._written < target:
                self._raise_if_outage_too_long()
                wait = 0.5 if deadline is None else min(0.5, deadline - time.monotonic())
                if wait <= 0:
                    raise TimeoutError(f"events not durable within {timeout} s")
                self._cond.wait(wait)

    def _raise_if_outage_too_long(self) -> None:
        since = self._outage_since
        if since is not None and time.monotonic() - since > self.outage_limit_s:
            raise EventStoreUnavailable(
                f"the event store at {self._safe_url()} has been unreachable for more than "
                f"{self.outage_limit_s:.0f} s"
            )

    def _safe_url(self) -> str:
        return self.url.split("@")[-1]

    def _write_forever(self) -> None:
        backoff = 0.01
        while True:
            with self._cond:
                while not self._buffer and not self._closing:
                    self._cond.wait()
                if not self._buffer:
                    return
                batch = [self._buffer[i] for i in range(min(len(self._buffer), WRITE_BATCH_EVENTS))]
            try:
                self._write(batch)
            except TRANSIENT_ERRORS as exc:
                with self._cond:
                    if self._outage_since is None:
                        self._outage_since = time.monotonic()
                        log.warning("event store unreachable (%s); holding events", exc)
                    self._cond.notify_all()
                time.sleep(backoff)
                backoff = min(backoff * 2, RETRY_BACKOFF_MAX_S)
                continue
            except Exception:  # noqa: BLE001 - never let the writer die
                log.exception("dropping %d events that Redis refused", len(batch))
            backoff = 0.01
            with self._cond:
                for _ in batch:
                    self._buffer.popleft()
                self._written += len(batch)
                self._outage_since = None
                self._cond.notify_all()

    def _write(self, batch: list[Event]) -> None:
        by_run: dict[str, list[Event]] = {}
        for event in batch:
            by_run.setdefault(event.run_id, []).append(event)
        pipe = self.client.pipeline(transaction=False)
        for run_id, events in by_run.items():
            key = events_key(run_id)
            for event in events:
                pipe.xadd(
                    key,
                    {EVENT_FIELD: event.to_json()},
                    id=f"0-{event.seq}",
                    maxlen=self.max_events,
                    approximate=True,
                )
            pipe.publish(events_channel(run_id), "[" + ",".join(e.to_json() for e in events) + "]")
            ended = any(e.is_terminal for e in events)
            pipe.expire(key, self.ttl_s if ended else UNFINISHED_RUN_TTL_S)
        for result in pipe.execute(raise_on_error=False):
            if isinstance(result, ResponseError) and "equal or smaller" not in str(result):
                log.error("event write refused: %s", result)  # a duplicate seq is expected

    def close(self) -> None:
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        writer = self._writer
        if writer is not None and writer.is_alive() and self._pid == os.getpid():
            writer.join(timeout=5)
        self.client.close()

    # -- reading ----------------------------------------------------------------------------
    def read(self, run_id: str, after: int = 0, limit: int | None = None) -> list[Event]:
        entries = self.client.xrange(events_key(run_id), f"(0-{after}", "+", count=limit)
        return _events_from_entries(entries)

    async def aread(self, run_id: str, after: int = 0, limit: int | None = None) -> list[Event]:
        client = self._loop_state().client
        entries = await client.xrange(events_key(run_id), f"(0-{after}", "+", count=limit)
        return _events_from_entries(entries)

    def last_seq(self, run_id: str) -> int:
        entries = self.client.xrevrange(events_key(run_id), "+", "-", count=1)
        return seq_of(entries[0][0]) if entries else 0

    async def alast_seq(self, run_id: str) -> int:
        entries = await self._loop_state().client.xrevrange(events_key(run_id), "+", "-", count=1)
        return seq_of(entries[0][0]) if entries else 0

    def expire(self, run_id: str, ttl_s: float) -> None:
        self.client.expire(events_key(run_id), int(ttl_s))

    # -- live -------------------------------------------------------------------------------
    def _loop_state(self) -> _LoopState:
        loop = asyncio.get_running_loop()
        state = self._loops.get(loop)
        if state is None:
            state = self._loops[loop] = _LoopState(self.url, self._client_kwargs)
        return state

    @property
    def hub(self) -> PubSubHub:
        """This event loop's hub (one pub/sub connection for all its subscribers)."""
        return self._loop_state().hub

    @asynccontextmanager
    async def live(self, run_id: str) -> AsyncIterator[asyncio.Queue]:
        async with self._loop_state().hub.listen(events_channel(run_id)) as queue:
            yield queue

    async def aclose(self) -> None:
        state = self._loops.pop(asyncio.get_running_loop(), None)
        if state is not None:
            await state.hub.aclose()
            await state.client.aclose()
