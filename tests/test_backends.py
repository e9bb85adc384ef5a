"""The EventBackend contract, run against every backend (memory and Redis), dramatiq style."""

import asyncio
import threading
import time

import redis

from streaming import Event, RedisEventBackend, StreamContext
from streaming.events import dumps

WAIT_S = 20  # generous bound on anything that should take milliseconds


def make(run_id: str, seq: int, event_type: str = "token", **data) -> Event:
    data = data or {"content": f"t{seq}", "finish_reason": None}
    return Event.build(run_id, seq, event_type, dumps(data), data)


def store(backend, run_id: str, seqs, terminal_at: int | None = None) -> list[Event]:
    events = [
        make(run_id, s, "complete", output=None) if s == terminal_at else make(run_id, s)
        for s in seqs
    ]
    for event in events:
        backend.append(event)
    backend.flush(timeout=WAIT_S)
    return events


async def collect(backend, run_id: str, after: int = 0) -> list[Event]:
    return [event async for event in backend.subscribe(run_id, after=after)]


def seqs(events) -> list[int]:
    return [e.seq for e in events]


# -- append, read, last_seq, flush -------------------------------------------------------------
async def test_append_then_read_everything_in_order(backend, run_id):
    events = store(backend, run_id, range(1, 6))
    assert backend.read(run_id) == events
    assert backend.read(run_id, after=0) == events
    assert await backend.aread(run_id) == events
    assert [e.to_json() for e in backend.read(run_id)] == [e.to_json() for e in events]


async def test_read_after_and_limit(backend, run_id):
    store(backend, run_id, range(1, 11))
    assert seqs(backend.read(run_id, after=7)) == [8, 9, 10]
    assert seqs(backend.read(run_id, after=2, limit=3)) == [3, 4, 5]
    assert seqs(backend.read(run_id, limit=1)) == [1]
    assert backend.read(run_id, after=10) == []
    assert seqs(await backend.aread(run_id, after=8, limit=5)) == [9, 10]


async def test_last_seq(backend, run_id):
    assert backend.last_seq(run_id) == 0
    store(backend, run_id, range(1, 4))
    assert backend.last_seq(run_id) == 3


async def test_unknown_run_reads_empty(backend):
    assert backend.read("no-such-run") == []
    assert backend.last_seq("no-such-run") == 0


async def test_runs_are_kept_apart(backend, run_id):
    other = run_id + "-other"
    store(backend, run_id, range(1, 4))
    store(backend, other, range(1, 3))
    assert {e.run_id for e in backend.read(run_id)} == {run_id}
    assert seqs(backend.read(other)) == [1, 2]


async def test_a_seq_is_never_stored_twice(backend, run_id):
    first = store(backend, run_id, range(1, 4))
    store(backend, run_id, [2, 3])  # a retried write of events already stored
    assert backend.read(run_id) == first
    store(backend, run_id, [4])
    assert seqs(backend.read(run_id)) == [1, 2, 3, 4]


async def test_flush_makes_every_event_durable(backend, run_id, redis_url):
    ctx = StreamContext(run_id, backend=backend)
    for i in range(2_000):
        ctx.sync_emit_token(f"t{i} ")
    ctx.flush(timeout=WAIT_S)
    assert seqs(backend.read(run_id)) == list(range(1, 2_001))
    if isinstance(backend, RedisEventBackend):  # durable in Redis, not in this process
        other = redis.Redis.from_url(redis_url)
        try:
            assert other.xlen(f"runcast:events:{run_id}") == 2_000
        finally:
            other.close()


async def test_aflush(backend, run_id):
    ctx = StreamContext(run_id, backend=backend)
    await ctx.emit_token("a")
    await ctx.aflush(timeout=WAIT_S)
    assert seqs(await backend.aread(run_id)) == [1]


async def test_expire(backend, run_id):
    store(backend, run_id, range(1, 4), terminal_at=3)
    backend.expire(run_id, 0.2)
    deadline = time.monotonic() + WAIT_S
    while backend.read(run_id) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert backend.read(run_id) == []
    assert backend.last_seq(run_id) == 0


async def test_expire_keeps_the_log_until_the_ttl(backend, run_id):
    store(backend, run_id, range(1, 3))
    backend.expire(run_id, 60)
    assert seqs(backend.read(run_id)) == [1, 2]


# -- subscribe ---------------------------------------------------------------------------------
async def test_subscribe_from_zero_replays_then_goes_live(backend, run_id):
    store(backend, run_id, range(1, 4))
    task = asyncio.create_task(collect(backend, run_id))
    await asyncio.sleep(0.2)  # the subscriber has replayed 1..3 and waits
    assert not task.done()
    store(backend, run_id, range(4, 7))
    store(backend, run_id, [7], terminal_at=7)
    events = await asyncio.wait_for(task, WAIT_S)
    assert seqs(events) == list(range(1, 8))
    assert events[-1].type == "complete"


async def test_subscribe_from_seq_n(backend, run_id):
    store(backend, run_id, range(1, 6))
    task = asyncio.create_task(collect(backend, run_id, after=3))
    await asyncio.sleep(0.1)
    store(backend, run_id, [6], terminal_at=6)
    assert seqs(await asyncio.wait_for(task, WAIT_S)) == [4, 5, 6]


async def test_subscribe_before_any_event(backend, run_id):
    task = asyncio.create_task(collect(backend, run_id))
    await asyncio.sleep(0.2)
    store(backend, run_id, range(1, 3))
    store(backend, run_id, [3], terminal_at=3)
    assert seqs(await asyncio.wait_for(task, WAIT_S)) == [1, 2, 3]


async def test_late_subscriber_after_the_terminal_event_gets_all_and_ends(backend, run_id):
    store(backend, run_id, range(1, 5), terminal_at=4)
    events = await asyncio.wait_for(collect(backend, run_id), WAIT_S)
    assert seqs(events) == [1, 2, 3, 4]
    assert events[-1].is_terminal
    tail = await asyncio.wait_for(collect(backend, run_id, after=2), WAIT_S)
    assert seqs(tail) == [3, 4]


async def test_resuming_at_the_terminal_event_ends_at_once(backend, run_id):
    store(backend, run_id, range(1, 4), terminal_at=3)
    assert await asyncio.wait_for(collect(backend, run_id, after=3), WAIT_S) == []


async def test_subscription_ends_after_the_terminal_event(backend, run_id):
    """Nothing after the terminal event is yielded, and the iterator finishes by itself."""
    task = asyncio.create_task(collect(backend, run_id))
    await asyncio.sleep(0.2)
    store(backend, run_id, [1, 2], terminal_at=2)
    store(backend, run_id, [3])  # a stray event after the end (never emitted in practice)
    events = await asyncio.wait_for(task, WAIT_S)
    assert seqs(events) == [1, 2]


async def test_subscriber_attaching_mid_stream_sees_no_gap_and_no_duplicate(backend, run_id):
    total = 400
    ctx = StreamContext(run_id, backend=backend)
    started = threading.Event()

    def produce():
        for i in range(total):
            ctx.sync_emit_token(f"t{i}")
            if i == total // 4:
                started.set()
            if i % 10 == 0:
                time.sleep(0.002)
        ctx.sync_emit_complete(output="done")
        ctx.flush(timeout=WAIT_S)

    producer = threading.Thread(target=produce)
    producer.start()
    try:
        assert await asyncio.to_thread(started.wait, WAIT_S)
        late = asyncio.create_task(collect(backend, run_id))
        await asyncio.sleep(0.01)
        later = asyncio.create_task(collect(backend, run_id, after=5))
        first, second = await asyncio.wait_for(asyncio.gather(late, later), WAIT_S)
    finally:
        await asyncio.to_thread(producer.join, WAIT_S)
    assert seqs(first) == list(range(1, total + 2))
    assert seqs(second) == list(range(6, total + 2))
    assert first[-1].type == "complete"


async def test_two_subscribers_get_the_same_events(backend, run_id):
    tasks = [asyncio.create_task(collect(backend, run_id)) for _ in range(2)]
    await asyncio.sleep(0.2)
    ctx = StreamContext(run_id, backend=backend)
    for i in range(50):
        ctx.sync_emit_token(f"t{i}")
        if i % 10 == 0:
            await asyncio.sleep(0)
    ctx.sync_emit_complete(output=1)
    ctx.flush(timeout=WAIT_S)
    one, two = await asyncio.wait_for(asyncio.gather(*tasks), WAIT_S)
    assert seqs(one) == seqs(two) == list(range(1, 52))
    assert one == two


async def test_a_subscriber_that_leaves_early_does_not_disturb_another(backend, run_id):
    store(backend, run_id, range(1, 4))
    stays = asyncio.create_task(collect(backend, run_id))
    leaver = backend.subscribe(run_id)
    assert (await asyncio.wait_for(leaver.__anext__(), WAIT_S)).seq == 1
    await leaver.aclose()
    store(backend, run_id, [4], terminal_at=4)
    assert seqs(await asyncio.wait_for(stays, WAIT_S)) == [1, 2, 3, 4]


async def test_subscribers_on_many_runs(backend, run_id):
    runs = [f"{run_id}-{i}" for i in range(10)]
    tasks = [asyncio.create_task(collect(backend, r)) for r in runs]
    await asyncio.sleep(0.2)
    for r in runs:
        store(backend, r, [1, 2], terminal_at=2)
    results = await asyncio.wait_for(asyncio.gather(*tasks), WAIT_S)
    for r, events in zip(runs, results):
        assert seqs(events) == [1, 2]
        assert {e.run_id for e in events} == {r}
