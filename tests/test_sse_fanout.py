"""SSE fan-out: a crowd on one live run through one API process (DESIGN.md, "HTTP API" and
"Event backends": gap-free, no duplicate, resumable, terminal last, one pub/sub connection).

The subscribers join at different moments of a live run, some from the start, some resuming
from a seq (also one further back than the crowd's shared feed), some dropping their connection
and resuming with Last-Event-ID; every one must end with exactly the run's log.
"""

from __future__ import annotations

import asyncio
import random

import httpx
import pytest
import redis

from benchmarks.sse import api_redis_connections
from tests.api_helpers import FrameReader, words
from tests.log_check import check_log
from tests.services import start_api

pytestmark = pytest.mark.usefixtures("worker")

WORDS = 300
CROWD = 120


@pytest.fixture(scope="module")
def api(redis_url, worker):
    process, url = start_api(redis_url)
    yield process, url
    process.stop()


async def follow(client: httpx.AsyncClient, run_id: str, after: int = 0,
                 drop_after: int | None = None) -> list[dict]:
    """Frames of the stream from `after`; with `drop_after`, the connection is closed after that
    many frames and the stream resumed with Last-Event-ID, as EventSource does."""
    received: list[dict] = []
    headers = {"Last-Event-ID": str(after)} if after else {}
    while True:
        reader = FrameReader()
        dropped = False
        async with client.stream("GET", f"/runs/{run_id}/stream", headers=headers) as stream:
            assert stream.status_code == 200
            async for text in stream.aiter_text():
                for frame in reader.feed(text):
                    assert frame.id == str(frame.data["seq"]) and frame.event == frame.data["type"]
                    received.append(frame.data)
                if drop_after is not None and len(received) >= drop_after:
                    dropped, drop_after = True, None
                    break
        if not dropped:
            return received
        headers = {"Last-Event-ID": str(received[-1]["seq"])}


async def crowd_on_live_run(url: str, redis_url: str, api_pid: int) -> None:
    rng = random.Random(14)
    limits = httpx.Limits(max_connections=CROWD + 20, max_keepalive_connections=CROWD + 20)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:
        run_id = (await client.post("/runs", json={
            "agent": "tokens", "input": {"text": words(WORDS), "delay": 0.01}})).json()["run_id"]

        async def member(i: int) -> tuple[int, list[dict]]:
            await asyncio.sleep(rng.uniform(0, 2.0))  # joins while the run is live
            after = rng.choice([0, 0, 0, 5, 50]) if i % 4 == 0 else 0
            drop = rng.randint(1, 100) if i % 5 == 0 else None
            return after, await follow(client, run_id, after, drop)

        tasks = [asyncio.create_task(member(i)) for i in range(CROWD)]
        await asyncio.sleep(1.0)
        admin = redis.Redis.from_url(redis_url)
        try:
            attached = api_redis_connections(api_pid, admin, admin.connection_pool
                                             .connection_kwargs["port"])
        finally:
            admin.close()
        results = await asyncio.gather(*tasks)
        # one further back than everyone (the shared feed began later): its own feed
        late_full = await follow(client, run_id, 0)
        log = (await client.get(f"/runs/{run_id}/events",
                                params={"limit": 10_000})).json()["events"]

    assert len(log) == WORDS + 2
    check_log(run_id, log)
    for after, frames in results:
        assert frames == log[after:], f"a subscriber from seq {after} did not get the log"
    assert late_full == log
    assert attached["pubsub"] == 1, attached  # one pub/sub connection for the whole crowd
    assert attached["total"] < CROWD // 2, attached  # none per subscriber


def test_a_crowd_on_a_live_run_gets_the_complete_log_each(api, redis_url):
    process, url = api
    asyncio.run(crowd_on_live_run(url, redis_url, process.proc.pid))


def test_a_crowd_on_a_finished_run_gets_it_from_one_feed(api, redis_url):
    async def scenario() -> None:
        _process, url = api
        async with httpx.AsyncClient(base_url=url, timeout=60) as client:
            run_id = (await client.post("/runs", json={
                "agent": "tokens", "input": {"text": words(50)}})).json()["run_id"]
            await client.get(f"/runs/{run_id}/wait", params={"timeout": 30})
            logs = await asyncio.gather(*(follow(client, run_id, after)
                                          for after in [0] * 20 + [10, 52, 60]))
            log = (await client.get(f"/runs/{run_id}/events")).json()["events"]
        assert logs[:20] == [log] * 20
        assert logs[20] == log[10:]
        assert logs[21] == [] and logs[22] == []  # past the end of a finished run: closes

    asyncio.run(scenario())


def test_run_and_batch_streams_share_the_one_pubsub_connection(api, redis_url):
    """DESIGN, "Event backends": one pub/sub connection per API process for all its
    subscribers, batch stream subscribers included."""
    process, url = api

    async def scenario() -> None:
        async with httpx.AsyncClient(base_url=url, timeout=60) as client:
            run_id = (await client.post("/runs", json={
                "agent": "tokens", "input": {"text": words(40), "delay": 0.05}})).json()["run_id"]
            batch = (await client.post("/batches", json={"runs": [
                {"agent": "countdown", "input": {"steps": 20, "delay": 0.1}}]})).json()

            async def batch_frames() -> list[str]:
                events = []
                async with client.stream("GET", f"/batches/{batch['batch_id']}/stream") as s:
                    assert s.status_code == 200
                    async for line in s.aiter_lines():
                        if line.startswith("event: "):
                            events.append(line[len("event: "):])
                return events

            streams = [asyncio.create_task(follow(client, run_id)),
                       asyncio.create_task(batch_frames())]
            await asyncio.sleep(1.0)  # both subscribed, neither ended
            admin = redis.Redis.from_url(redis_url)
            try:
                attached = api_redis_connections(process.proc.pid, admin, admin.connection_pool
                                                 .connection_kwargs["port"])
            finally:
                admin.close()
            run_frames, batch_events = await asyncio.gather(*streams)
        assert attached["pubsub"] == 1, attached
        assert run_frames[-1]["type"] == "complete" and len(run_frames) == 42
        assert batch_events[-1] == "done"

    asyncio.run(scenario())
