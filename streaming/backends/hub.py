"""One pub/sub connection per process (per event loop), fanned out to many subscribers."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from streaming.backends.base import RESYNC
from streaming.constants import SUBSCRIBE_CONFIRM_S

log = logging.getLogger(__name__)


class PubSubHub:
    """SUBSCRIBEs each channel once, however many local listeners it has.

    A listener's queue receives whatever `decode(message)` returns for each message of its
    channel: the hub's decoder, or the one the channel's first listener named (run events and
    batch frames share the process's one connection). When a channel's subscription is
    confirmed again after a lost connection (our reconnect, or redis-py's own), RESYNC goes on
    its queues: messages may have been missed meanwhile, and the log read that RESYNC triggers
    now sees everything they carried.
    """

    def __init__(self, client: aioredis.Redis, decode: Callable[[bytes], object]) -> None:
        self._client = client
        self._decode = decode
        self._decoders: dict[str, Callable[[bytes], object]] = {}
        self._queues: dict[str, set[asyncio.Queue]] = {}
        self._confirmed: dict[str, asyncio.Event] = {}
        self._pubsub: aioredis.client.PubSub | None = None
        self._reader: asyncio.Task | None = None
        self._lock = asyncio.Lock()

    @property
    def channels(self) -> int:
        return len(self._queues)

    @asynccontextmanager
    async def listen(self, channel: str, decode: Callable[[bytes], object] | None = None
                     ) -> AsyncIterator[asyncio.Queue]:
        """A queue of the channel's messages, once Redis has confirmed the subscription; raises
        redis' ConnectionError when it cannot be made or is not confirmed within
        SUBSCRIBE_CONFIRM_S (Redis is down: the caller answers 503 rather than hang)."""
        queue: asyncio.Queue = asyncio.Queue()
        listeners = self._queues.setdefault(channel, set())
        listeners.add(queue)
        try:
            if len(listeners) == 1:
                self._confirmed[channel] = asyncio.Event()
                if decode is not None:
                    self._decoders[channel] = decode
                await self._subscribe(channel)
            confirmed = self._confirmed[channel]
            try:
                await asyncio.wait_for(confirmed.wait(), SUBSCRIBE_CONFIRM_S)
            except TimeoutError:
                raise RedisConnectionError(
                    f"Redis did not confirm the subscription to {channel} within "
                    f"{SUBSCRIBE_CONFIRM_S:g} s") from None
            yield queue
        finally:
            listeners.discard(queue)
            if not listeners and self._queues.get(channel) is listeners:
                del self._queues[channel]
                self._confirmed.pop(channel, None)
                self._decoders.pop(channel, None)
                await self._unsubscribe(channel)

    async def _subscribe(self, channel: str) -> None:
        async with self._lock:
            if self._pubsub is None:
                self._pubsub = self._client.pubsub()
            try:
                await self._pubsub.subscribe(channel)
            except (RedisError, OSError) as exc:
                raise RedisConnectionError(f"subscribing to {channel} failed: {exc}") from exc
            finally:  # running, it reconnects and resubscribes the other listeners' channels
                if self._reader is None or self._reader.done():
                    self._reader = asyncio.create_task(self._read_forever())

    async def _unsubscribe(self, channel: str) -> None:
        async with self._lock:
            if self._pubsub is not None:
                try:
                    await self._pubsub.unsubscribe(channel)
                except (RedisError, OSError):
                    pass  # a reconnect subscribes only to channels still listened to

    async def _read_forever(self) -> None:
        backoff = 0.05
        while self._queues:
            try:
                message = await self._pubsub.get_message(timeout=1.0)
                backoff = 0.05
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - connection lost: reconnect, resubscribe
                log.warning("pub/sub connection lost (%s); reconnecting", exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 1.0)
                await self._reconnect()
                continue
            if message is None:
                continue
            channel = message["channel"]
            channel = channel.decode() if isinstance(channel, bytes) else channel
            kind = message["type"]
            if kind == "subscribe":
                confirmed = self._confirmed.get(channel)
                if confirmed is None:
                    continue
                if not confirmed.is_set():
                    confirmed.set()  # first subscription: the listener reads the log itself
                    continue
                item = RESYNC  # subscribed again after a reconnect
            elif kind == "message":
                try:
                    item = self._decoders.get(channel, self._decode)(message["data"])
                except Exception:  # noqa: BLE001 - a foreign message must not stop the reader
                    log.warning("undecodable message on %s", channel)
                    item = RESYNC
            else:
                continue
            for queue in self._queues.get(channel, ()):
                queue.put_nowait(item)
        self._reader = None

    async def _reconnect(self) -> None:
        async with self._lock:
            old, self._pubsub = self._pubsub, self._client.pubsub()
            try:
                await old.aclose()
            except Exception:  # the old connection is gone anyway
                log.debug("closing a lost pub/sub connection failed", exc_info=True)
            channels = list(self._queues)
            try:
                if channels:  # each confirmation puts RESYNC on the channel's queues
                    await self._pubsub.subscribe(*channels)
            except (RedisError, OSError):
                return  # the next read fails again and we come back here

    async def aclose(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            try:
                await self._reader
            except (asyncio.CancelledError, Exception):  # we are closing
                log.debug("the pub/sub reader ended with an error", exc_info=True)
        if self._pubsub is not None:
            await self._pubsub.aclose()
