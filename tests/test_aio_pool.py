"""The shared-loop execution mode: `runcast worker --io-bound` (threads pool), async handlers.

A real worker started through the `runcast` command (`--io-bound -c 300`, queue `aio`) and the
session's Redis: async handlers run as tasks of one event loop per process; cancellation cancels
the task; timeouts end the run failed/timeout on time, even when the handler blocks the loop; a
handler that ignores its cancellation is abandoned and the run still ends cancelled; hundreds of
runs at once each get their complete log.
"""

from __future__ import annotations

import time
from datetime import datetime

import pytest
import redis

from tests.agents_aio import LEFT_RUNNING
from tests.runs_support import eventually, finish, types
from tests.services import BIN, Process, service_env

AGENTS = "tasks.demo,tests.agents_aio"
GRACE_S = 1  # RUNCAST_CANCEL_GRACE of the worker (tests.services.service_env)


@pytest.fixture(scope="module")
def aio_worker(redis_url, runcast):
    import tests.agents_aio  # noqa: F401 - the test process registers them too

    args = [str(BIN / "runcast"), "worker", "--io-bound", "-c", "300", "-Q", "aio",
            "-l", "info", "-n", "aio@%h", "--without-gossip", "--without-mingle"]
    process = Process(args, service_env(redis_url, RUNCAST_AGENTS=AGENTS), "worker-aio").start()
    process.wait_for_output(" ready.", timeout=60)
    yield process
    process.stop()


pytestmark = pytest.mark.usefixtures("aio_worker")


def submit(runcast, agent: str, payload: dict | None = None) -> str:
    return runcast.submit(agent, payload or {})


def wait_running(runcast, run_id: str) -> dict:
    return eventually(lambda: (r := runcast.get_run(run_id)) and r["status"] == "running"
                      and r["last_seq"] >= 2 and r, timeout=30)


def test_the_worker_runs_a_threads_pool_of_the_asked_size(aio_worker):
    aio_worker.wait_for_output("concurrency: 300 (thread)", timeout=10)


def test_async_handlers_share_one_event_loop_per_process(runcast):
    ids = [submit(runcast, "t_aio_steps", {"steps": 5, "step": 0.05}) for _ in range(3)]
    outputs = [finish(runcast, run_id)[0]["output"] for run_id in ids]
    assert {(o["pid"], o["loop"]) for o in outputs} == {(outputs[0]["pid"], outputs[0]["loop"])}
    assert {o["thread"] for o in outputs} == {"runcast-async-handlers"}


def test_many_runs_at_once_each_get_their_complete_log(runcast):
    n, steps = 250, 10
    started = time.monotonic()
    ids = [submit(runcast, "t_aio_steps", {"steps": steps, "step": 0.1}) for _ in range(n)]
    for run_id in ids:
        run, events = finish(runcast, run_id, timeout=120)
        assert run["status"] == "succeeded", run
        assert types(events) == ["started"] + ["token"] * steps + ["complete"]
    elapsed = time.monotonic() - started
    # one after another they would take n x 1 s; at once, about 1 s plus the submitting
    assert elapsed < n * 0.2, f"{n} runs of 1 s took {elapsed:.1f} s: not run concurrently"


def test_cancel_cancels_the_handler_task(runcast):
    run_id = submit(runcast, "t_aio_steps", {"steps": 600, "step": 0.05})
    wait_running(runcast, run_id)
    asked = time.monotonic()
    runcast.cancel(run_id, "enough")
    run, events = finish(runcast, run_id)
    assert run["status"] == "cancelled"
    assert events[-1].data == {"reason": "enough"}
    assert time.monotonic() - asked < GRACE_S + 2, "not cancelled as a task, promptly"


def test_a_failing_async_handler_fails_the_run(runcast):
    run, _events = finish(runcast, submit(runcast, "t_aio_fail", {"message": "nope"}))
    assert run["status"] == "failed"
    assert run["error"]["code"] == "agent_error"
    assert run["error"]["error"] == "nope"
    assert run["error"]["details"] == {"type": "ValueError"}


def seconds_between(first, last) -> float:
    return (datetime.fromisoformat(last.ts) - datetime.fromisoformat(first.ts)).total_seconds()


def test_timeout_ends_the_run_failed_on_time(runcast):
    run, events = finish(runcast, submit(runcast, "t_aio_limited"))
    assert run["status"] == "failed" and run["error"]["code"] == "timeout"
    took = seconds_between(events[0], events[-1])
    assert 0.9 <= took < 1 + GRACE_S + 1.5, took


def test_a_handler_blocking_the_loop_still_times_out_on_time(runcast):
    run, events = finish(runcast, submit(runcast, "t_aio_blocking", {"seconds": 4}))
    assert run["status"] == "failed" and run["error"]["code"] == "timeout"
    took = seconds_between(events[0], events[-1])
    assert took < 1 + GRACE_S + 1.5, took  # not after the 4 s block
    # the loop is free again once the block ends: later runs are not stuck behind it
    later, _ = finish(runcast, submit(runcast, "t_aio_steps", {"steps": 2, "step": 0.01}))
    assert later["status"] == "succeeded"


def test_a_handler_that_ignores_its_cancellation_is_abandoned(runcast, redis_url):
    run_id = submit(runcast, "t_aio_stubborn", {"seconds": 8})
    wait_running(runcast, run_id)
    asked = time.monotonic()
    runcast.cancel(run_id, "stop now")
    run, events = finish(runcast, run_id)
    ended = time.monotonic() - asked
    assert run["status"] == "cancelled"
    assert events[-1].type == "cancelled"
    assert GRACE_S - 0.3 <= ended < GRACE_S + 3, ended  # after the grace, not after 8 s
    client = redis.Redis.from_url(redis_url)
    try:  # the handler saw the cancellation and went on: it was left behind, not waited for
        assert client.exists(LEFT_RUNNING.format(run_id=run_id))
    finally:
        client.close()
    # and the worker still serves runs meanwhile
    later, _ = finish(runcast, submit(runcast, "t_aio_steps", {"steps": 2, "step": 0.01}))
    assert later["status"] == "succeeded"


def test_a_ready_worker_freezes_its_startup_heap_and_collects_the_young_less_often(runcast):
    from tasks.constants import GC_YOUNG_THRESHOLD

    run, _events = finish(runcast, submit(runcast, "t_aio_gc"))
    # what importing Celery, kombu, redis-py and pydantic left is out of every collection
    assert run["output"]["frozen"] > 50_000
    assert run["output"]["threshold"][0] == GC_YOUNG_THRESHOLD
