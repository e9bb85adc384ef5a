"""The Redis event backend under faults: killed connections, a restart, an outage, backpressure.

Each test starts its own redis-server (so it may kill, stop and restart it freely).
"""

import asyncio
import shutil
import threading
import time

import pytest
import redis

from streaming import EventStoreUnavailable, RedisEventBackend, StreamContext

WAIT_S = 20  # generous bound on anything that should take well under a second

pytestmark = pytest.mark.skipif(shutil.which("redis-server") is None, reason="no redis-server")


async def collect(backend, run_id: str) -> list:
    return [event async for event in backend.subscribe(run_id, after=0)]


def client_ids(admin: redis.Redis, **filters) -> list[int]:
    """Ids of the server's clients matching every `field=value` (e.g. name=..., cmd=...)."""
    mine = admin.client_id()
    return [
        int(c["id"])
        for c in admin.client_list()
        if int(c["id"]) != mine and all(c.get(k) == v for k, v in filters.items())
    ]


class Producer(threading.Thread):
    """Emits `total` tokens at a steady pace, then the terminal event, then flushes."""

    def __init__(self, ctx: StreamContext, total: int, pause_every: int = 10) -> None:
        super().__init__(daemon=True)
        self.ctx, self.total, self.pause_every = ctx, total, pause_every
        self.emitted = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            for i in range(self.total):
                self.ctx.sync_emit_token(f"t{i} ")
                self.emitted += 1
                if i % self.pause_every == 0:
                    time.sleep(0.002)
            self.ctx.sync_emit_complete(output={"n": self.total})
            self.ctx.flush(timeout=WAIT_S)
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.error = exc

    async def reached(self, n: int) -> None:
        deadline = time.monotonic() + WAIT_S
        while self.emitted < n and self.is_alive():
            assert time.monotonic() < deadline, "the producer stalled"
            await asyncio.sleep(0.005)


async def run_with_faults(backend, run_id, total, inject) -> list:
    """Subscribe, produce `total` events while `inject(producer)` runs, return what arrived."""
    subscriber = asyncio.create_task(collect(backend, run_id))
    await asyncio.sleep(0.1)  # subscribed
    producer = Producer(StreamContext(run_id, backend=backend), total)
    producer.start()
    await inject(producer)
    await asyncio.to_thread(producer.join, WAIT_S)
    assert producer.error is None, producer.error
    return await asyncio.wait_for(subscriber, WAIT_S)


def assert_exactly_once_in_order(events, total):
    assert [e.seq for e in events] == list(range(1, total + 2))
    assert events[-1].type == "complete"
    assert [e.data["content"] for e in events[:-1]] == [f"t{i} " for i in range(total)]


# -- killed connections ------------------------------------------------------------------------
async def test_writer_connection_killed_mid_stream(server, admin, run_id):
    backend = RedisEventBackend(server.url)
    total = 1_500
    kills = []

    async def kill_writer(producer):
        for mark in (300, 700, 1_100):
            await producer.reached(mark)
            ids = client_ids(admin, name="runcast-event-writer")
            for client_id in ids:
                admin.client_kill_filter(_id=client_id)
            kills.append(len(ids))

    try:
        events = await run_with_faults(backend, run_id, total, kill_writer)
        assert_exactly_once_in_order(events, total)
        assert [e.seq for e in backend.read(run_id)] == list(range(1, total + 2))
        assert sum(kills) >= 2  # the writer's connection really was killed (and came back)
    finally:
        await backend.aclose()
        backend.close()


async def test_pubsub_connection_killed_mid_stream(server, admin, run_id):
    backend = RedisEventBackend(server.url)
    total = 1_500
    kills = []

    async def kill_pubsub(producer):
        for mark in (300, 700, 1_100):
            await producer.reached(mark)
            kills.append(admin.execute_command("CLIENT KILL TYPE pubsub"))

    try:
        events = await run_with_faults(backend, run_id, total, kill_pubsub)
        assert_exactly_once_in_order(events, total)
        assert sum(kills) >= 2
    finally:
        await backend.aclose()
        backend.close()


async def test_all_normal_connections_killed_mid_stream(server, admin, run_id):
    """Writer and reader connections at once (SKIPME keeps our admin client alive)."""
    backend = RedisEventBackend(server.url)
    total = 1_000

    async def kill_normal(producer):
        for mark in (250, 600):
            await producer.reached(mark)
            admin.execute_command("CLIENT KILL TYPE normal SKIPME yes")
            admin.execute_command("CLIENT KILL TYPE pubsub")

    try:
        events = await run_with_faults(backend, run_id, total, kill_normal)
        assert_exactly_once_in_order(events, total)
    finally:
        await backend.aclose()
        backend.close()


# -- a restart ---------------------------------------------------------------------------------
async def test_server_restarted_mid_stream(persistent_server, run_id):
    backend = RedisEventBackend(persistent_server.url)
    total = 1_000

    async def restart(producer):
        await producer.reached(200)
        await asyncio.to_thread(persistent_server.restart, 1.0)
        assert producer.is_alive() or producer.emitted == total

    try:
        events = await run_with_faults(backend, run_id, total, restart)
        assert_exactly_once_in_order(events, total)
        assert [e.seq for e in backend.read(run_id)] == list(range(1, total + 2))
    finally:
        await backend.aclose()
        backend.close()


# -- outage and backpressure -------------------------------------------------------------------
def test_emits_block_when_the_buffer_is_full_and_nothing_is_dropped(server, run_id):
    backend = RedisEventBackend(server.url, buffer_events=20, outage_limit_s=30)
    try:
        ctx = StreamContext(run_id, backend=backend)
        server.stop()
        producer = Producer(ctx, total=60, pause_every=1_000)
        producer.start()
        time.sleep(1.0)
        assert producer.is_alive(), "emits went on with a full buffer"
        assert producer.emitted == 20  # the buffer's size: blocked, not dropping
        server.start()
        producer.join(WAIT_S)
        assert not producer.is_alive()
        assert producer.error is None, producer.error
        events = backend.read(run_id)
        assert [e.seq for e in events] == list(range(1, 62))
    finally:
        backend.close()


def test_an_outage_longer_than_the_limit_fails_the_flush(server, run_id):
    backend = RedisEventBackend(server.url, outage_limit_s=1.0)
    try:
        ctx = StreamContext(run_id, backend=backend)
        server.stop()
        for i in range(5):
            ctx.sync_emit_token(f"t{i}")  # the buffer has room: emits return at once
        with pytest.raises(TimeoutError):
            ctx.flush(timeout=0.3)  # an outage shorter than the limit is not yet a failure
        with pytest.raises(EventStoreUnavailable):
            ctx.flush(timeout=WAIT_S)
        server.start()  # the events were held, not dropped: they land once Redis is back
        deadline = time.monotonic() + WAIT_S
        while len(backend.read(run_id)) < 5 and time.monotonic() < deadline:
            time.sleep(0.05)
        ctx.flush(timeout=WAIT_S)  # and the writer is healthy again
        assert [e.seq for e in backend.read(run_id)] == [1, 2, 3, 4, 5]
    finally:
        backend.close()


def test_a_cancel_does_not_wait_behind_a_blocked_emit(server, run_id):
    backend = RedisEventBackend(server.url, buffer_events=1, outage_limit_s=30)
    try:
        ctx = StreamContext(run_id, backend=backend)
        server.stop()
        ctx.sync_emit_token("fills the buffer")
        blocked = threading.Thread(target=ctx.sync_emit_token, args=("waits",), daemon=True)
        blocked.start()
        time.sleep(0.3)
        assert blocked.is_alive()
        cancelled = threading.Thread(target=ctx.request_cancel, args=("user",), daemon=True)
        cancelled.start()
        cancelled.join(5)
        assert not cancelled.is_alive() and ctx.cancelled
        server.start()
        blocked.join(WAIT_S)
        assert not blocked.is_alive()
    finally:
        backend.close()


# -- one pub/sub connection per process --------------------------------------------------------
async def test_fifty_subscribers_share_one_pubsub_connection(server, admin, run_id):
    backend = RedisEventBackend(server.url)
    runs = [f"{run_id}-{i}" for i in range(50)]
    try:
        tasks = [asyncio.create_task(collect(backend, r)) for r in runs]
        deadline = time.monotonic() + WAIT_S
        while len(admin.pubsub_channels("runcast:events-live:*")) < len(runs):
            assert time.monotonic() < deadline, "subscribers did not subscribe"
            await asyncio.sleep(0.02)
        pubsub_clients = admin.client_list(_type="pubsub")
        assert len(pubsub_clients) == 1
        assert int(pubsub_clients[0]["sub"]) == len(runs)
        for r in runs:
            ctx = StreamContext(r, backend=backend)
            ctx.sync_emit_token("x")
            ctx.sync_emit_complete(output=r)
        results = await asyncio.wait_for(asyncio.gather(*tasks), WAIT_S)
        for r, events in zip(runs, results):
            assert [(e.seq, e.type) for e in events] == [(1, "token"), (2, "complete")]
            assert events[-1].data["output"] == r
    finally:
        await backend.aclose()
        backend.close()
