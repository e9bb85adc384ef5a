"""kombu's Redis transport, keeping one Redis client per channel.

kombu's Redis channel builds a new `redis.Redis` object for every command it sends outside its
event loop: each message published, each task event, each acknowledgement. Building one costs
about 0.2 ms of CPU (redis-py fills a table of ~170 reply callbacks), more than the command's own
round trip, and a worker pays it several times per task. The client is only a view on the
channel's connection pool (thread-safe; a forked child's pool resets itself), so one per channel
serves every caller; a new pool (after a reconnect) gets a new client.

Used for `redis://` brokers (tasks.celery_config); other schemes keep kombu's own transport.
"""

from __future__ import annotations

from typing import Any

from kombu.transport import redis as kombu_redis


class Channel(kombu_redis.Channel):
    _runcast_client: Any = None

    def _create_client(self, asynchronous: bool = False) -> Any:
        if asynchronous:
            return super()._create_client(asynchronous=True)
        client = self._runcast_client
        if client is None or client.connection_pool is not self.pool:
            client = self._runcast_client = super()._create_client()
        return client


class Transport(kombu_redis.Transport):
    Channel = Channel


TRANSPORT = f"{__name__}:Transport"


def transport_for(broker_url: str) -> str | None:
    """The transport `broker_url` is served with: ours for plain redis://, else kombu's choice."""
    return TRANSPORT if broker_url.startswith("redis://") else None
