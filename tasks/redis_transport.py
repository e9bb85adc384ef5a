"""kombu's Redis transport, keeping one Redis client per channel and taking messages in bulk.

kombu's Redis channel builds a new `redis.Redis` object for every command it sends outside its
event loop: each message published, each task event, each acknowledgement. Building one costs
about 0.2 ms of CPU (redis-py fills a table of ~170 reply callbacks), more than the command's own
round trip, and a worker pays it several times per task. The client is only a view on the
channel's connection pool (thread-safe; a forked child's pool resets itself), so one per channel
serves every caller; a new pool (after a reconnect) gets a new client.

A consumer takes one message per BRPOP, and then registers it as unacknowledged (kombu's
visibility emulation: a ZADD and an HSET) in a round trip of its own: two round trips and two
turns of the event loop per message, each one a wait for the GIL. Where a process runs many tasks
at once (the threads pool of `runcast worker --io-bound`) the GIL is busy with the runs already
started, and a thousand runs submitted at once took three times as long to be received as plain
Celery tasks that only sleep (benchmarks/io_bound.py, messages received by the worker over time).
Here, once BRPOP has returned a message, the channel takes up to BROKER_FETCH_MAX more from the
same queue with one RPOP, as many as the prefetch limit allows, registers them all as
unacknowledged in one pipeline *before* any is handed to Celery (a task acknowledged before its
registration would leave it to be redelivered), then delivers them in order. Messages are out of
Redis and not yet registered for one round trip, as one already was between kombu's BRPOP and its
registration; a worker killed in that window loses up to BROKER_FETCH_MAX + 1 messages instead of
one, and their runs, still queued, are sent again by the lost-run sweep (tasks/lost.py) once they
have waited LOST_AFTER_S.

A publish can also go into a Redis pipeline of the caller's (`publishing_into`): kombu and Celery
build the message and its task-sent event as always, and their LPUSH and PUBLISH join the
caller's commands instead of a pipeline of their own. A submit stores its run and sends its
message in one MULTI that way (tasks.runtime), when the broker is the run store's Redis.

Used for `redis://` brokers (tasks.celery_config); other schemes keep kombu's own transport.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from kombu.transport import redis as kombu_redis
from kombu.transport import virtual
from kombu.utils.encoding import bytes_to_str
from kombu.utils.json import dumps, loads

from tasks.constants import BROKER_FETCH_MAX

log = logging.getLogger(__name__)


class QoS(kombu_redis.QoS):
    """kombu's, except that a message registered by a bulk fetch is not registered again."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.registered: set[str] = set()  # tags registered by the fetch, not yet delivered

    def append(self, message: Any, delivery_tag: str) -> None:
        if delivery_tag in self.registered:
            self.registered.discard(delivery_tag)
            virtual.QoS.append(self, message, delivery_tag)
        else:
            super().append(message, delivery_tag)

    def register(self, payloads: list[dict]) -> None:
        """Register messages taken from Redis as unacknowledged, all in one round trip."""
        now = kombu_redis.time()
        with self.pipe_or_acquire() as pipe:
            for payload in payloads:
                properties = payload["properties"]
                info = properties["delivery_info"]
                tag = properties["delivery_tag"]
                pipe.zadd(self.unacked_index_key, {tag: now})
                pipe.hset(self.unacked_key, tag,
                          dumps([payload, info["exchange"], info["routing_key"]]))
            pipe.execute()
        self.registered.update(p["properties"]["delivery_tag"] for p in payloads)


_into = threading.local()  # the pipeline this thread's publishes go into, while one is set


@contextmanager
def publishing_into(pipeline: Any) -> Iterator[None]:
    """Within this block, a publish batch of this thread (kombu's `producer.batch()`) adds its
    commands to `pipeline`, which the caller executes (or drops): nothing is sent here."""
    _into.pipeline = pipeline
    try:
        yield
    finally:
        _into.pipeline = None


class IntoPipeline(kombu_redis.PublishBatch):
    """kombu's publish batch, buffering into the caller's pipeline (see `publishing_into`)."""

    def __init__(self, channel: Any, pipeline: Any) -> None:  # not kombu's: nothing to acquire
        self.channel = channel
        self.max_size = 1 << 30
        self._buffered = 0
        self._collecting = None
        self._failed = None
        self._aborted = False
        self._closed = False
        self.pipeline = pipeline

    def flush(self) -> None:
        self._check_usable()
        self._buffered = 0  # the commands wait in the caller's pipeline

    def discard(self) -> None:
        self._aborted = True  # the caller, who raised, does not execute its pipeline

    def close(self) -> None:
        self._closed = True


class Channel(kombu_redis.Channel):
    QoS = QoS
    _runcast_client: Any = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._no_ack_queues: set[str] = set()  # before kombu's init, which may consume
        super().__init__(*args, **kwargs)

    def create_publish_batch(self, max_size: int) -> Any:
        pipeline = getattr(_into, "pipeline", None)
        if pipeline is not None:
            return IntoPipeline(self, pipeline)
        return super().create_publish_batch(max_size)

    def basic_consume(self, queue: str, no_ack: bool = False, *args: Any, **kwargs: Any) -> Any:
        # a queue consumed without acknowledgements has nothing to register: kombu's pace
        (self._no_ack_queues.add if no_ack else self._no_ack_queues.discard)(queue)
        return super().basic_consume(queue, no_ack, *args, **kwargs)

    def _create_client(self, asynchronous: bool = False) -> Any:
        if asynchronous:
            return super()._create_client(asynchronous=True)
        client = self._runcast_client
        if client is None or client.connection_pool is not self.pool:
            client = self._runcast_client = super()._create_client()
        return client

    def _brpop_read(self, **options: Any) -> bool:
        """kombu's, then up to BROKER_FETCH_MAX more messages of the same queue (see above)."""
        try:
            try:
                popped = self.client.parse_response(self.client.connection, "BRPOP", **options)
            except self.connection_errors:
                self.client.connection.disconnect()  # the next turn reconnects
                raise
            if not popped:
                raise kombu_redis.Empty()
            key, item = bytes_to_str(popped[0]), popped[1]
            queue = key.rsplit(self.sep, 1)[0]
            self._queue_cycle.rotate(queue)
        finally:
            self._in_poll = None
            self._flush_brpop_reauth()  # kombu's: the BRPOP connection is idle now
        payloads = [loads(bytes_to_str(item))]
        room = self._fetch_room(queue)
        if room:
            payloads += self._fetch_more(key, room, payloads)
        failure = None
        for payload in payloads:  # each one, whatever another's callback raised
            try:
                self.connection._deliver(payload, queue)
            except Exception as exc:  # noqa: BLE001 - raised below, once all are delivered
                failure = failure or exc
        if failure is not None:
            raise failure
        return True

    def _fetch_more(self, key: str, room: int, taken: list[dict]) -> list[dict]:
        """Up to `room` more messages of `key`, registered with `taken` (the BRPOP's). A failure
        costs the batch, not the message in hand: what was taken goes on through kombu's own
        registration, one by one, as it would have."""
        more: list[dict] = []
        try:
            more = [loads(bytes_to_str(raw))
                    for raw in self._create_client().rpop(key, room) or []]
            if more:
                self.qos.register(taken + more)
        except Exception:  # a broken connection shows again at the next BRPOP
            log.warning("taking more messages of %s failed; one by one instead", key,
                        exc_info=True)
        return more

    def _fetch_room(self, queue: str) -> int:
        """How many more messages the prefetch limit lets this fetch take (besides the one)."""
        if queue in self._no_ack_queues:
            return 0
        estimate = self.qos.can_consume_max_estimate()
        if estimate is None:  # no prefetch limit
            return BROKER_FETCH_MAX
        return max(min(BROKER_FETCH_MAX, estimate - 1), 0)


class Transport(kombu_redis.Transport):
    Channel = Channel


TRANSPORT = f"{__name__}:Transport"


def transport_for(broker_url: str) -> str | None:
    """The transport `broker_url` is served with: ours for plain redis://, else kombu's choice."""
    return TRANSPORT if broker_url.startswith("redis://") else None
