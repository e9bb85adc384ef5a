"""RedisEventBackend: one Redis Stream per run as the durable log, PUBLISH for live delivery."""

from __future__ import annotations

import asyncio
import json
import logging
import weakref
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import redis
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from streaming.backends.base import EventBackend
from streaming.backends.hub import PubSubHub
from streaming.backends.writer import TRANSIENT_ERRORS, EventWriter
from streaming.constants import (
    DEFAULT_MAX_EVENTS,
    DEFAULT_RUN_TTL_S,
    EVENT_FIELD,
    EVENTS_CHANNEL,
    EVENTS_KEY,
    FIND_PAGE_EVENTS,
    OUTAGE_LIMIT_S,
    READ_POOL_CONNECTIONS,
    READ_POOL_WAIT_S,
    READ_RETRIES,
    READ_RETRY_BACKOFF_S,
    WRITE_BUFFER_EVENTS,
)
from streaming.events import Event

log = logging.getLogger(__name__)

__all__ = ["TRANSIENT_ERRORS", "RedisEventBackend", "decode_batch", "events_channel", "events_key"]


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
    return [Event.from_fields(fields) for fields in json.loads(raw)]


def _events_from_entries(entries) -> list[Event]:
    return [Event.from_json(fields[EVENT_FIELD.encode()]) for _id, fields in entries]


class _LoopState:
    """What the backend holds per event loop: an async client and the pub/sub hub."""

    def __init__(self, url: str, client_kwargs: dict) -> None:
        client_kwargs = {"retry": AsyncRetry(ExponentialBackoff(*READ_RETRY_BACKOFF_S),
                                             READ_RETRIES), **client_kwargs}
        # A bounded pool that waits for a free connection: many subscribers share a few
        # connections for their reads instead of failing past redis-py's default cap.
        pool = aioredis.BlockingConnectionPool.from_url(
            url, max_connections=READ_POOL_CONNECTIONS, timeout=READ_POOL_WAIT_S, **client_kwargs
        )
        self.client = aioredis.Redis(connection_pool=pool)
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
        progress_key: str | None = None,
    ) -> None:
        self.url = url
        # When set (a key template with {run_id}), the latest progress data of each written batch
        # is also stored in that hash's `progress` field: the run store's record follows it.
        self.progress_key = progress_key
        self.max_events = max_events
        self.ttl_s = ttl_s
        self.buffer_events = buffer_events
        self.outage_limit_s = outage_limit_s
        self._client_kwargs = {"socket_connect_timeout": 2, "health_check_interval": 30}
        self._client_kwargs.update(client_kwargs or {})
        # Reads are idempotent: a killed or restarted connection is retried (from_url's own
        # default is no retry at all). The writer has its own connection and retry loop.
        self.client = redis.Redis.from_url(
            url,
            **{"retry": Retry(ExponentialBackoff(*READ_RETRY_BACKOFF_S), READ_RETRIES),
               **self._client_kwargs},
        )
        self._writer = EventWriter(
            url,
            self._client_kwargs,
            max_events=max_events,
            ttl_s=ttl_s,
            buffer_events=buffer_events,
            outage_limit_s=outage_limit_s,
            progress_key=progress_key,
        )
        self._loops: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopState] = (
            weakref.WeakKeyDictionary()
        )

    @classmethod
    def from_url(cls, url: str, **options) -> RedisEventBackend:
        return cls(url, **options)

    # -- writing ----------------------------------------------------------------------------
    def append(self, event: Event) -> None:
        self._writer.append(event)

    def flush(self, timeout: float | None = None) -> None:
        self._writer.flush(timeout)

    def refusal(self, run_id: str) -> str | None:
        return self._writer.refusal(run_id)

    def drop_unwritten(self, run_id: str, reason: str) -> None:
        self._writer.drop_run(run_id, reason)

    def close(self) -> None:
        self._writer.close()
        self.client.close()

    # -- reading ----------------------------------------------------------------------------
    def read(self, run_id: str, after: int = 0, limit: int | None = None) -> list[Event]:
        entries = self.client.xrange(events_key(run_id), f"(0-{after}", "+", count=limit)
        return _events_from_entries(entries)

    async def aread(self, run_id: str, after: int = 0, limit: int | None = None) -> list[Event]:
        client = self._loop_state().client
        entries = await client.xrange(events_key(run_id), f"(0-{after}", "+", count=limit)
        return _events_from_entries(entries)

    def find_last(self, run_id: str, event_type: str, up_to_seq: int) -> Event | None:
        """Reads the log backwards from `up_to_seq`, a page at a time."""
        key, end = events_key(run_id), f"0-{up_to_seq}"
        while True:
            entries = self.client.xrevrange(key, end, "-", count=FIND_PAGE_EVENTS)
            for event in _events_from_entries(entries):
                if event.type == event_type:
                    return event
            if len(entries) < FIND_PAGE_EVENTS:
                return None
            end = f"({entries[-1][0].decode()}"

    def last_seq(self, run_id: str) -> int:
        """The highest seq stored or still waiting in this process's buffer (a retry in the same
        process continues after both)."""
        pending = self._writer.pending_last_seq(run_id)  # before reading: none is missed
        entries = self.client.xrevrange(events_key(run_id), "+", "-", count=1)
        return max(pending, seq_of(entries[0][0]) if entries else 0)

    async def alast_event(self, run_id: str) -> Event | None:
        entries = await self._loop_state().client.xrevrange(events_key(run_id), "+", "-", count=1)
        return _events_from_entries(entries)[0] if entries else None

    def expire(self, run_id: str, ttl_s: float) -> None:
        self.client.pexpire(events_key(run_id), max(1, int(ttl_s * 1000)))

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
