"""A run read from the event loop: one pipelined round trip on an async client, no thread hop.

`GET /runs/{id}/wait` reads the run up to three times; through the thread pool each read costs a
thread hand-off on top of its Redis round trip, which under load is most of a small request's
time. Embedded mode (no Redis) reads the memory store in the thread pool as before.
"""

from __future__ import annotations

import asyncio
import weakref
from typing import Any

import redis.asyncio as aioredis
from fastapi.concurrency import run_in_threadpool
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff

from api.constants import RUN_READ_CONNECTIONS, RUN_READ_RETRIES
from streaming.backends.redis import events_key, seq_of
from tasks import service
from tasks.redis_store import run_key
from tasks.runtime import Runtime
from tasks.store import decode_record, public

_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, aioredis.Redis] = (
    weakref.WeakKeyDictionary()
)


def _client(url: str) -> aioredis.Redis:
    loop = asyncio.get_running_loop()
    client = _clients.get(loop)
    if client is None:
        pool = aioredis.BlockingConnectionPool.from_url(
            url, max_connections=RUN_READ_CONNECTIONS, socket_connect_timeout=2,
            retry=Retry(ExponentialBackoff(), RUN_READ_RETRIES),
        )
        client = _clients[loop] = aioredis.Redis(connection_pool=pool)
    return client


async def aget_run(rt: Runtime, run_id: str) -> dict[str, Any] | None:
    """The run as the contract's JSON (without stream_token), or None: service.get_run, async."""
    if rt.settings.embedded:
        return await run_in_threadpool(service.get_run, rt, run_id)
    async with _client(rt.settings.redis_url).pipeline(transaction=False) as pipe:
        pipe.hgetall(run_key(run_id))
        pipe.xrevrange(events_key(run_id), "+", "-", count=1)
        raw, top = await pipe.execute()
    if not raw:
        return None
    return public(decode_record(raw, seq_of(top[0][0]) if top else 0))
