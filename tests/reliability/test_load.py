"""Load (issue 6, "Reliability"): many runs, many subscribers, and memory that comes back.

Each test runs against its own redis-server, Celery workers and API (module fixtures), so
nothing here disturbs, or is disturbed by, other tests. Figures are printed (`pytest -s`) and
recorded in RELIABILITY.md.

    .venv/bin/pytest tests/reliability/test_load.py -s
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from collections import Counter
from types import SimpleNamespace

import httpx
import pytest
import redis

from tests.api_helpers import (
    TERMINAL_TYPES,
    FrameReader,
    assert_frame_matches_envelope,
    words,
)
from tests.log_check import check_log
from tests.redis_server import RedisServer
from tests.runs_support import eventually
from tests.services import http_client, start_api, start_worker

pytestmark = pytest.mark.reliability

BATCHES = 5
BATCH_SIZE = 1_000
WORKERS = 2
CONCURRENCY = 4
SUBSCRIBERS = 200
STREAMING_RUNS = 50
SHORT_TTL_S = 2
# Runcast keys that may live without a TTL: the index zsets, which the workers trim.
INDEXES = {b"runcast:runs", b"runcast:running", b"runcast:queued"}  # of runs: empty once expired
UNEXPIRING_KEYS = INDEXES | {b"runcast:workers"}
# The metrics' counters live for good, their size bounded by the agents, not by the runs.
METRICS_PREFIX = b"runcast:metrics:"


def is_lock(key: bytes) -> bool:
    """The reaper's locks, taken for a moment every few seconds (with a TTL)."""
    return key.startswith(b"runcast:") and key.endswith(b"-lock")


@contextlib.contextmanager
def stack(workers: int, concurrency: int, **env: str):
    """A private redis-server, `workers` Celery workers and an API, all stopped after."""
    with contextlib.ExitStack() as stop:
        server = RedisServer().start()
        stop.callback(server.cleanup)
        procs = []
        for i in range(workers):
            proc = start_worker(server.url, f"load{i}-{server.port}", concurrency, **env)
            stop.callback(proc.stop)
            procs.append(proc)
        api, url = start_api(server.url, **env)
        stop.callback(api.stop)
        client = redis.Redis.from_url(server.url)
        stop.callback(client.close)
        yield SimpleNamespace(url=url, redis=client, redis_url=server.url, workers=procs,
                              api=api)


@pytest.fixture(scope="module")
def loaded():
    with stack(WORKERS, CONCURRENCY) as services:
        yield services


@pytest.fixture(scope="module")
def http(loaded):
    with http_client(loaded.url, timeout=120) as client:
        yield client


def used_memory(client: redis.Redis) -> tuple[int, int]:
    """Redis's used_memory, and the same without client connection buffers (which follow the
    number and traffic of connections, not the data kept)."""
    info = client.info("memory")
    return int(info["used_memory"]), int(info["used_memory"]) - int(info["mem_clients_normal"])


def key_sizes(client: redis.Redis) -> dict[bytes, int]:
    """Every key in Redis (runcast's, Celery's) and its MEMORY USAGE."""
    return {k: client.memory_usage(k) for k in client.scan_iter(count=1000)
            if not is_lock(k) and not k.startswith(METRICS_PREFIX)}


def run_keys(client: redis.Redis) -> list[bytes]:
    """Keys of runs, events, batches and idempotency keys (not the index zsets)."""
    return [k for k in client.scan_iter(match="runcast:*", count=1000)
            if k not in UNEXPIRING_KEYS and not is_lock(k) and not k.startswith(METRICS_PREFIX)]


class TerminalEvents:
    """Every terminal event published on the runs' live channels (PSUBSCRIBE), by run id: with a
    TTL of seconds a run may be gone before a request asks for it, its terminal event is not."""

    def __init__(self, url: str) -> None:
        self.client = redis.Redis.from_url(url)
        self.pubsub = self.client.pubsub(ignore_subscribe_messages=True)
        self.pubsub.psubscribe("runcast:events-live:*")
        self.seen: dict[str, list[str]] = {}
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._listen, daemon=True)
        self.thread.start()

    def _listen(self) -> None:
        while not self.stopping.is_set():
            message = self.pubsub.get_message(timeout=0.2)
            if message and message["type"] == "pmessage":
                for envelope in json.loads(message["data"]):
                    if envelope["type"] in TERMINAL_TYPES:
                        self.seen.setdefault(envelope["run_id"], []).append(envelope["type"])

    def wait(self, run_ids: list[str], timeout: float = 60) -> dict[str, int]:
        """Counts of terminal event types once every run has one (exactly one)."""
        eventually(lambda: all(run_id in self.seen for run_id in run_ids), timeout=timeout,
                   what="a terminal event of every run")
        assert all(len(self.seen[run_id]) == 1 for run_id in run_ids), "two terminal events"
        return dict(Counter(self.seen[run_id][0] for run_id in run_ids))

    def close(self) -> None:
        self.stopping.set()
        self.thread.join(5)
        self.pubsub.close()
        self.client.close()


def mixed_runs(http: httpx.Client, n: int, tag: str) -> list[str]:
    """`n` runs of every kind: fast, chatty, failing, custom events, cancelled (queued and
    running), idempotent repeats, and one batch."""
    kinds = [
        ("echo", {"x": "y" * 200}), ("tokens", {"text": words(20)}),
        ("async_tokens", {"text": words(10)}), ("countdown", {"steps": 3, "delay": 0}),
        ("fail", {"message": "on purpose"}), ("custom", {"document_id": "d"}),
        ("chatty", {"n": 200}), ("sleep", {"seconds": 5}),
    ]
    ids = []
    for i in range(n - 20):
        agent, payload = kinds[i % len(kinds)]
        body = {"agent": agent, "input": payload, "metadata": {"tag": tag}}
        if i % 10 == 0:
            body["idempotency_key"] = f"{tag}-{i}"
        response = http.post("/runs", json=body)
        assert response.status_code == 202, response.text
        ids.append(response.json()["run_id"])
        if "idempotency_key" in body:  # the same request again: the same run
            assert http.post("/runs", json=body).json()["run_id"] == ids[-1]
        if agent == "sleep":  # cancelled, while queued or running
            assert http.post(f"/runs/{ids[-1]}/cancel", json={"reason": "load"}).status_code in (
                202, 409)
    batch = http.post("/batches", json={"runs": [{"agent": "echo", "input": {"i": i}}
                                                 for i in range(20)]})
    assert batch.status_code == 202, batch.text
    return ids + batch.json()["run_ids"]


def test_memory_returns_after_the_run_ttl():
    with stack(1, CONCURRENCY, RUNCAST_RUN_TTL=str(SHORT_TTL_S)) as services, \
            http_client(services.url) as http:
        client = services.redis
        terminal = TerminalEvents(services.redis_url)
        # warm up (scripts loaded, broker bindings, the worker registered), then let it expire
        terminal.wait(mixed_runs(http, 30, "warm-up"))
        wait_for_expiry(client)
        (before, before_data), keys_before = used_memory(client), key_sizes(client)

        ids = mixed_runs(http, 300, "measured")
        peak = used_memory(client)[0]
        counts = terminal.wait(ids)
        peak = max(peak, used_memory(client)[0])
        terminal.close()
        assert counts.keys() == {"complete", "error", "cancelled"}, counts

        wait_for_expiry(client)
        (after, after_data), keys_after = used_memory(client), key_sizes(client)
        print(f"\nRedis used_memory with RUNCAST_RUN_TTL={SHORT_TTL_S}: {before} bytes before "
              f"300 runs ({counts}), {peak} at the peak, {after} once expired "
              f"({after - before:+d}; without client buffers {after_data - before_data:+d})")

        leaks = [k for k in client.scan_iter(match="runcast:*", count=1000)
                 if client.ttl(k) == -1 and k not in UNEXPIRING_KEYS
                 and not k.startswith(METRICS_PREFIX)]
        assert leaks == [], f"runcast keys without a TTL: {leaks[:20]}"
        # the index zsets are trimmed: no entry is left for a run that is gone
        assert {key: client.zcard(key) for key in INDEXES} == dict.fromkeys(INDEXES, 0)
        assert client.zcard("runcast:workers") == 1
        # every key is back as it was (the broker's bindings, the workers zset), and memory
        # with it: what may be left is in connection buffers, not data
        assert keys_after == keys_before, (keys_before, keys_after)
        assert after_data - before_data < 128 * 1024, (before_data, after_data)
        assert after - before < 512 * 1024, (before, peak, after)
        assert http.get(f"/runs/{ids[0]}").status_code == 404


def wait_for_expiry(client: redis.Redis, timeout: float = 30) -> None:
    """Until every run, event log, batch and idempotency key has expired (the TTL has passed
    and Redis has evicted them), and the workers have trimmed the index."""
    deadline = time.monotonic() + timeout
    while True:
        left = run_keys(client)
        index = sum(client.zcard(key) for key in INDEXES)
        if not left and index == 0:
            return
        if time.monotonic() > deadline:
            ttls = {k: client.ttl(k) for k in left[:10]}
            raise AssertionError(f"{len(left)} keys and {index} index entries left: {ttls}")
        time.sleep(0.25)


def batch_runs(http: httpx.Client, batch_id: str) -> list[dict]:
    runs, cursor = [], None
    while True:
        params = {"batch_id": batch_id, "limit": 1000, **({"cursor": cursor} if cursor else {})}
        response = http.get("/runs", params=params)
        assert response.status_code == 200, response.text
        page = response.json()
        runs += page["runs"]
        cursor = page["next_cursor"]
        if not cursor:
            return runs


def test_5000_runs_in_batches_all_succeed_nothing_lost(loaded, http):
    started = time.perf_counter()
    batches = []
    for b in range(BATCHES):
        body = {"runs": [{"agent": "echo", "input": {"b": b, "i": i}} for i in range(BATCH_SIZE)]}
        response = http.post("/batches", json=body)
        assert response.status_code == 202, response.text
        batch = response.json()
        assert batch["total"] == BATCH_SIZE and len(set(batch["run_ids"])) == BATCH_SIZE
        batches.append(batch)
    submitted = time.perf_counter() - started

    deadline = time.monotonic() + 150
    while True:
        statuses = [http.get(f"/batches/{b['batch_id']}").json() for b in batches]
        if all(s["done"] for s in statuses):
            break
        assert time.monotonic() < deadline, f"batches not done after 150 s: {statuses}"
        time.sleep(0.2)
    elapsed = time.perf_counter() - started
    total = BATCHES * BATCH_SIZE
    print(f"\n{total} echo runs in {BATCHES} batches, {WORKERS} workers x {CONCURRENCY}: "
          f"submitted in {submitted:.1f} s, all ended in {elapsed:.1f} s, "
          f"{total / elapsed:.0f} runs/s")

    for b, (batch, status) in enumerate(zip(batches, statuses, strict=True)):
        assert status.pop("created_at") and status.pop("finished_at")
        assert status == {"batch_id": batch["batch_id"], "total": BATCH_SIZE,
                          "counts": {"succeeded": BATCH_SIZE}, "done": True}
        runs = batch_runs(http, batch["batch_id"])
        assert sorted(r["run_id"] for r in runs) == sorted(batch["run_ids"]), "runs missing"
        for run in runs:
            assert run["status"] == "succeeded", run
            assert run["output"] == {"echo": run["input"]} and run["input"]["b"] == b, run
            assert run["attempt"] == 1, f"a run executed more than once: {run}"
            assert run["last_seq"] == 2, f"log is not started + complete: {run}"
        assert sorted(r["input"]["i"] for r in runs) == list(range(BATCH_SIZE))
    # nothing left behind in the broker: no message waiting, none taken and unacknowledged
    # (a message is acknowledged just after its run is written: late acks)
    eventually(lambda: loaded.redis.llen("default") == 0 and loaded.redis.hlen("unacked") == 0,
               timeout=10, what="an empty queue and no unacknowledged message")
    assert {key: loaded.redis.zcard(key) for key in INDEXES - {b"runcast:runs"}} == {
        b"runcast:running": 0, b"runcast:queued": 0}, "an index still holds ended runs"
    for worker in loaded.workers:
        assert worker.proc.poll() is None, worker.output()[-2000:]


async def subscribe(client: httpx.AsyncClient, run_id: str) -> list[dict]:
    """One SSE subscriber from the first event to the terminal one: the envelopes it got."""
    reader, got = FrameReader(), []
    async with client.stream("GET", f"/runs/{run_id}/stream") as response:
        assert response.status_code == 200, await response.aread()
        async for text in response.aiter_text():
            for frame in reader.feed(text):
                assert_frame_matches_envelope(frame, run_id)
                got.append(frame.data)
    assert reader.buffer.strip() == "", f"stream ended inside a frame: {reader.buffer!r}"
    return got


async def test_200_sse_subscribers_get_every_event_once(loaded):
    limits = httpx.Limits(max_connections=SUBSCRIBERS + 20, max_keepalive_connections=20)
    async with httpx.AsyncClient(base_url=loaded.url, timeout=120, limits=limits) as client:
        text = words(40)
        body = {"runs": [{"agent": "tokens", "input": {"text": text, "delay": 0.02}}
                         for _ in range(STREAMING_RUNS)]}
        response = await client.post("/batches", json=body)
        assert response.status_code == 202, response.text
        run_ids = response.json()["run_ids"]
        started = time.perf_counter()
        subscribed_to = [run_ids[i % STREAMING_RUNS] for i in range(SUBSCRIBERS)]
        logs = await asyncio.gather(*(subscribe(client, run_id) for run_id in subscribed_to))
        elapsed = time.perf_counter() - started

        truth = {}
        for run_id in run_ids:
            page = (await client.get(f"/runs/{run_id}/events", params={"limit": 10_000})).json()
            assert page["done"], page
            truth[run_id] = page["events"]
            check_log(run_id, truth[run_id])
            assert [e["type"] for e in truth[run_id]] == ["started"] + ["token"] * 40 + [
                "complete"]
        runs = [(await client.get(f"/runs/{run_id}")).json() for run_id in run_ids]
        assert {run["status"] for run in runs} == {"succeeded"}

    for run_id, log in zip(subscribed_to, logs, strict=True):
        assert log == truth[run_id], f"subscriber of {run_id} saw a different log"
    frames = sum(len(log) for log in logs)
    print(f"\n{SUBSCRIBERS} SSE subscribers on {STREAMING_RUNS} streaming runs: {frames} frames, "
          f"every log equal to GET /events, in {elapsed:.1f} s")
