"""What an emit costs, beside raw redis-py and Celery's update_state path.

    .venv/bin/python -m benchmarks.emit [N]

Starts its own redis-server and measures, in this one process:
  (a) StreamContext.sync_emit_token into RedisEventBackend: N events, flushed, read back in order
  (b) raw redis-py: XADD per event + one PUBLISH per batch, pipelined 256 at a time (the same
      durable log and live announcement, with no library around it, and the envelopes built
      before the clock starts: the strongest baseline); (b2) with a PUBLISH per event
  (c) raw redis-py with one round trip per event (XADD + PUBLISH in a pipeline of two)
  (d) Celery's RedisBackend.store_result per event (what update_state costs)
  (e) emit-to-subscriber latency at a light rate, beside raw PUBLISH-to-subscriber latency
(a), (b) and (b2) are the best of a few rounds (the machine is shared). Targets: (a) >= 0.7 x (b),
and the p50 latency of (e) within 2 ms of raw.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
import uuid

import redis
import redis.asyncio as aioredis

from streaming import RedisEventBackend, StreamContext
from streaming.events import Event, dumps

ROUNDS = 3
BATCH = 256
LATENCY_RATE_PER_S = 200
LATENCY_DURATION_S = 2.0


def best_rate(measure, rounds: int = ROUNDS) -> float:
    """Events per second: the best of `rounds` calls of `measure()` -> (events, seconds)."""
    return max(n / seconds for n, seconds in (measure() for _ in range(rounds)))


def token_envelope(run_id: str, seq: int, text: str) -> str:
    data = {"content": text, "finish_reason": None}
    return Event.build(run_id, seq, "token", dumps(data), data).to_json()


# -- (a) the library ---------------------------------------------------------------------------
def library_emit(url: str, n: int) -> tuple[int, float]:
    backend = RedisEventBackend(url)
    run_id = uuid.uuid4().hex
    try:
        ctx = StreamContext(run_id, backend=backend, start_seq=0)
        start = time.perf_counter()
        for i in range(n):
            ctx.sync_emit_token("tok ")
        ctx.flush()
        elapsed = time.perf_counter() - start
        events = backend.read(run_id)
        if [e.seq for e in events] != list(range(1, n + 1)):
            raise AssertionError("the log is not complete and in order")
        backend.client.delete(f"runcast:events:{run_id}")
        return n, elapsed
    finally:
        backend.close()


# -- (b) and (c) raw redis-py ------------------------------------------------------------------
def raw_pipelined(url: str, n: int, publish_each: bool = False) -> tuple[int, float]:
    client = redis.Redis.from_url(url)
    run_id = uuid.uuid4().hex
    key, channel = f"bench:raw:{run_id}", f"bench:raw-live:{run_id}"
    try:
        envelopes = [token_envelope(run_id, i, "tok ") for i in range(n + 1)]  # not timed
        start = time.perf_counter()
        pipe = client.pipeline(transaction=False)
        batch: list[str] = []
        for i in range(1, n + 1):
            raw = envelopes[i]
            pipe.xadd(key, {"e": raw}, id=f"0-{i}", maxlen=100_000, approximate=True)
            if publish_each:
                pipe.publish(channel, raw)
            else:
                batch.append(raw)
            if i % BATCH == 0 or i == n:
                if batch:
                    pipe.publish(channel, "[" + ",".join(batch) + "]")
                    batch = []
                pipe.execute()
        elapsed = time.perf_counter() - start
        client.delete(key)
        return n, elapsed
    finally:
        client.close()


def raw_round_trip(url: str, n: int) -> tuple[int, float]:
    client = redis.Redis.from_url(url)
    run_id = uuid.uuid4().hex
    key, channel = f"bench:rt:{run_id}", f"bench:rt-live:{run_id}"
    try:
        envelopes = [token_envelope(run_id, i, "tok ") for i in range(n + 1)]  # not timed
        start = time.perf_counter()
        for i in range(1, n + 1):
            raw = envelopes[i]
            pipe = client.pipeline(transaction=False)
            pipe.xadd(key, {"e": raw}, id=f"0-{i}", maxlen=100_000, approximate=True)
            pipe.publish(channel, raw)
            pipe.execute()
        elapsed = time.perf_counter() - start
        client.delete(key)
        return n, elapsed
    finally:
        client.close()


# -- (d) Celery --------------------------------------------------------------------------------
def celery_store_result(url: str, n: int) -> tuple[int, float]:
    from celery import Celery

    app = Celery("bench", broker="memory://", backend=url)
    backend = app.backend
    task_id = uuid.uuid4().hex
    try:
        start = time.perf_counter()
        for i in range(n):
            backend.store_result(task_id, {"content": "tok ", "seq": i}, "PROGRESS")
        elapsed = time.perf_counter() - start
        return n, elapsed
    finally:
        backend.client.delete(backend.get_key_for_task(task_id))
        app.close()


# -- (e) latency -------------------------------------------------------------------------------
def percentiles(latencies_s: list[float]) -> tuple[float, float]:
    ms = sorted(x * 1000 for x in latencies_s)
    p99 = ms[min(len(ms) - 1, int(len(ms) * 0.99))]
    return statistics.median(ms), p99


def paced(count: int, rate: float):
    """Yields `count` times, `rate` times a second (sleeping in between, not spinning)."""
    start = time.perf_counter()
    for i in range(count):
        delay = start + i / rate - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        yield i


async def library_latency(url: str) -> tuple[float, float]:
    backend = RedisEventBackend(url)
    run_id = uuid.uuid4().hex
    count = int(LATENCY_RATE_PER_S * LATENCY_DURATION_S)
    sent: dict[int, float] = {}
    received: dict[int, float] = {}

    def produce():
        ctx = StreamContext(run_id, backend=backend, start_seq=0)
        for _ in paced(count, LATENCY_RATE_PER_S):
            sent[ctx.last_seq + 1] = time.perf_counter()
            ctx.sync_emit_token("tok ")
        sent[ctx.last_seq + 1] = time.perf_counter()
        ctx.sync_emit_complete(output=None)
        ctx.flush()

    async def consume():
        async for event in backend.subscribe(run_id):
            received[event.seq] = time.perf_counter()

    try:
        subscriber = asyncio.create_task(consume())
        await asyncio.sleep(0.2)  # subscribed
        await asyncio.to_thread(produce)
        await asyncio.wait_for(subscriber, 30)
        if sorted(received) != list(range(1, count + 2)):
            raise AssertionError("the subscriber missed events")
        return percentiles([received[s] - sent[s] for s in sent])
    finally:
        await backend.aclose()
        backend.close()


async def raw_latency(url: str) -> tuple[float, float]:
    channel = f"bench:latency:{uuid.uuid4().hex}"
    count = int(LATENCY_RATE_PER_S * LATENCY_DURATION_S)
    sent: dict[int, float] = {}
    received: dict[int, float] = {}
    sub_client = aioredis.Redis.from_url(url)
    pubsub = sub_client.pubsub()
    await pubsub.subscribe(channel)
    await pubsub.get_message(timeout=1.0)  # the subscribe confirmation

    def produce():
        client = redis.Redis.from_url(url)
        for i in paced(count, LATENCY_RATE_PER_S):
            sent[i] = time.perf_counter()
            client.publish(channel, str(i))
        client.close()

    async def consume():
        while len(received) < count:
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
            if message is not None:
                received[int(message["data"])] = time.perf_counter()

    try:
        consumer = asyncio.create_task(consume())
        await asyncio.to_thread(produce)
        await asyncio.wait_for(consumer, 30)
        return percentiles([received[i] - sent[i] for i in sent])
    finally:
        await pubsub.aclose()
        await sub_client.aclose()


# -- main --------------------------------------------------------------------------------------
def run(url: str, n: int = 50_000) -> dict[str, float]:
    small = max(1_000, n // 10)  # the slow paths run fewer events; rates are per second anyway
    figures = {
        "a_library_events_per_s": best_rate(lambda: library_emit(url, n)),
        "b_raw_pipelined_events_per_s": best_rate(lambda: raw_pipelined(url, n)),
        "b2_raw_pipelined_publish_each_per_s": best_rate(
            lambda: raw_pipelined(url, n, publish_each=True)
        ),
        "c_raw_round_trip_events_per_s": best_rate(lambda: raw_round_trip(url, small), 1),
        "d_celery_store_result_per_s": best_rate(lambda: celery_store_result(url, small), 1),
    }
    lib_p50, lib_p99 = asyncio.run(library_latency(url))
    raw_p50, raw_p99 = asyncio.run(raw_latency(url))
    figures.update(
        e_library_latency_p50_ms=lib_p50,
        e_library_latency_p99_ms=lib_p99,
        e_raw_publish_latency_p50_ms=raw_p50,
        e_raw_publish_latency_p99_ms=raw_p99,
    )
    a = figures["a_library_events_per_s"]
    figures.update(
        ratio_a_to_b=a / figures["b_raw_pipelined_events_per_s"],
        ratio_a_to_c=a / figures["c_raw_round_trip_events_per_s"],
        ratio_a_to_d=a / figures["d_celery_store_result_per_s"],
        latency_p50_over_raw_ms=lib_p50 - raw_p50,
    )
    return figures


def report(figures: dict[str, float]) -> None:
    print(f"emit benchmark (a, b, b2: the best of {ROUNDS} rounds)")
    for name, value in figures.items():
        unit = "" if name.startswith("ratio") else (" ms" if name.endswith("_ms") else "")
        print(f"  {name:40s} {value:>12,.2f}{unit}")
    ok_throughput = figures["ratio_a_to_b"] >= 0.7
    ok_latency = figures["latency_p50_over_raw_ms"] <= 2.0
    print(f"  target (a) >= 0.7 x (b): {'met' if ok_throughput else 'MISSED'}")
    print(f"  target p50 within 2 ms of raw: {'met' if ok_latency else 'MISSED'}")


def main(n: int = 50_000, url: str | None = None, quiet: bool = False) -> dict[str, float]:
    """Run every measurement (on its own redis-server unless `url` is given); return figures."""
    server = None
    if url is None:
        from tests.redis_server import RedisServer

        server = RedisServer().start()
        url = server.url
    try:
        figures = run(url, n)
    finally:
        if server is not None:
            server.cleanup()
    if not quiet:
        report(figures)
    return figures


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 50_000)
