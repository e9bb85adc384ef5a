"""A worker SIGKILLed while it dispatches a batch: every run still ends, and none runs twice.

Its own redis-server, so that only the workers started here take part (the session's worker
would pick up the dispatch otherwise). Worker A takes the batch's dispatch task; once its cursor
is past the first chunk and short of the end, A's whole process group is killed. Worker B then
finishes the job: the claimed runs A never sent are found by the lost-message sweep, the dispatch
task comes back after the broker's visibility timeout (or the reaper resumes the stalled batch).
"""

from __future__ import annotations

import time

import httpx
import pytest
import redis

from streaming.constants import BATCH_KEY
from tasks.runtime import Runtime
from tasks.settings import Settings
from tests.batch_support import check_batch_frames, read_batch_stream
from tests.log_check import check_log
from tests.redis_server import RedisServer
from tests.services import start_api, start_worker

pytestmark = pytest.mark.slow

TOTAL = 3000


@pytest.fixture
def server():
    server = RedisServer().start()
    yield server
    server.cleanup()


@pytest.mark.timeout(400)  # the broker gives the dispatch back after its visibility timeout
def test_worker_killed_during_dispatch_loses_no_run_and_runs_none_twice(server):
    processes = []
    try:
        worker_a = start_worker(server.url, name="dispatch-a", concurrency=2)
        processes.append(worker_a)
        api, url = start_api(server.url)
        processes.append(api)
        response = httpx.post(f"{url}/batches", timeout=60, json={
            "runs": [{"agent": "echo", "input": {"i": i}} for i in range(TOTAL)]})
        assert response.status_code == 202, response.text
        batch_id, run_ids = response.json()["batch_id"], response.json()["run_ids"]

        client = redis.Redis.from_url(server.url)
        key = BATCH_KEY.format(batch_id=batch_id)
        deadline = time.monotonic() + 60
        while not 0 < (cursor := int(client.hget(key, "dispatched") or 0)):
            assert time.monotonic() < deadline, "the dispatch never began"
            time.sleep(0.002)
        worker_a.kill()
        assert cursor < TOTAL, "the dispatch ended before the kill: nothing was tested"

        processes.append(start_worker(server.url, name="dispatch-b", concurrency=4))
        frames = read_batch_stream(url, batch_id, timeout=240)
        statuses = check_batch_frames(frames, batch_id, run_ids)
        assert frames[-1].data["counts"] == {"succeeded": TOTAL}
        assert int(client.hget(key, "dispatched")) == TOTAL

        rt = Runtime(Settings(redis_url=server.url))
        try:
            runs = rt.store.get_many(run_ids)
            again = 0
            for run_id, run in zip(run_ids, runs, strict=True):
                events = rt.events.read(run_id)
                check_log(run, events, attempts=run["attempt"])  # one terminal, attempts 1..n
                assert statuses[run_id].count("running") == run["attempt"]
                again += run["attempt"] > 1
            # only a run A was executing when it died runs again (a new attempt, not a
            # duplicate delivery: those are skipped by the fenced claim)
            assert again <= 2, f"{again} runs ran more than once"
        finally:
            rt.close()
        client.close()
    finally:
        for process in reversed(processes):
            process.stop()
