"""Workers killed mid-run (issue 3): the run runs again (attempt 2) or fails `worker_lost`.

Each test gets its own redis-server, so that only the workers it starts (with the settings it
gives them) consume its queues and reap its runs: the reaper runs in every worker's main
process with that worker's RUNCAST_MAX_ATTEMPTS, and the session worker must not take part.
Runs are submitted by a short-lived `python -c` with the same environment as the workers, and
read back through a Runtime built for that Redis.
"""

from __future__ import annotations

import signal
import time

import pytest

from tests.log_check import check_log
from tests.lost_support import LOST_DEADLINE_S, World
from tests.runs_support import eventually, node, types

pytestmark = pytest.mark.slow

def test_a_run_on_a_killed_worker_runs_again(world):
    # lost1 runs the run. `keeper` only reaps: it consumes another queue, and it does not even
    # load the demo agents, so it must requeue a run of an agent it does not know.
    lost = world.worker("lost1", concurrency=1)
    keeper = world.worker("keeper", queues="spare", RUNCAST_AGENTS="tests.agents_extra")
    run_id = world.submit("sleep", {"seconds": 4})
    eventually(lambda: world.run(run_id)["status"] == "running", timeout=30,
               what="the run to start on lost1")
    assert world.events(run_id)[0].data["worker"] == node("lost1")
    lost.kill(signal.SIGKILL)
    killed_at = time.monotonic()

    # The reaper notices the stale heartbeat and queues attempt 2 on the run's queue.
    eventually(lambda: world.run(run_id)["status"] == "queued", timeout=LOST_DEADLINE_S,
               interval=0.2, what="the lost run to be requeued")
    assert world.run(run_id)["attempt"] == 1
    # only keeper was alive to do it, with an agent it does not load
    eventually(lambda: f"run {run_id} lost its worker" in keeper.output(), timeout=10,
               what="keeper's log of the requeue")
    eventually(lambda: _llen(world, "default") == 1, timeout=10,
               what="attempt 2's message on the run's queue")

    # Fencing: a redelivered attempt-1 message now finds the run queued for attempt 2 and is
    # skipped; it goes to a queue only the replacement consumes, before `default`.
    world.celery.send_task("runcast.agent.sleep", args=[run_id, 1], task_id=run_id,
                           queue="fence")
    replacement = world.worker("r1", queues="fence", concurrency=2)
    eventually(lambda: f"run {run_id} attempt 1 skipped: fenced" in replacement.output(),
               timeout=30, what="the stale attempt to be fenced")
    assert types(world.events(run_id)).count("started") == 1
    assert world.run(run_id)["status"] == "queued"

    # The replacement now takes the default queue and runs attempt 2.
    assert world.celery.control.add_consumer("default", destination=[node("r1")], reply=True)
    run = eventually(lambda: (r := world.run(run_id))["status"] not in ("queued", "running")
                     and r, timeout=LOST_DEADLINE_S, interval=0.2, what="the run to end")
    assert time.monotonic() - killed_at < LOST_DEADLINE_S
    events = world.events(run_id)
    check_log(run, events, attempts=2)
    assert run["status"] == "succeeded" and run["output"] == {"slept": 4}
    starts = [e for e in events if e.type == "started"]
    assert starts[0].data["worker"] == node("lost1")
    assert starts[1].data["worker"] == node("r1")
    assert starts[1].seq > starts[0].seq  # seqs continue: attempt 2 reused none of attempt 1's

    # Again, after the run ended: an attempt-1 message changes nothing.
    world.celery.send_task("runcast.agent.sleep", args=[run_id, 1], task_id=run_id,
                           queue="fence")
    eventually(lambda: replacement.output().count(f"run {run_id} attempt 1 skipped") == 2,
               timeout=30, what="the late attempt to be skipped")
    assert world.events(run_id) == events
    assert world.run(run_id)["status"] == "succeeded"


def test_a_run_on_a_killed_worker_fails_after_max_attempts(world):
    env = {"RUNCAST_MAX_ATTEMPTS": "1"}
    lost = world.worker("lost2", concurrency=1, **env)
    world.worker("keeper2", queues="spare", **env)
    run_id = world.submit("sleep", {"seconds": 60}, **env)
    eventually(lambda: world.run(run_id)["status"] == "running", timeout=30,
               what="the run to start")
    lost.kill(signal.SIGKILL)
    killed_at = time.monotonic()
    run = eventually(lambda: (r := world.run(run_id))["status"] not in ("queued", "running")
                     and r, timeout=LOST_DEADLINE_S, interval=0.2, what="the run to fail")
    assert time.monotonic() - killed_at < LOST_DEADLINE_S
    assert run["status"] == "failed"
    assert run["error"]["code"] == "worker_lost"
    events = world.events(run_id)
    check_log(run, events, attempts=1)
    assert events[-1].data["code"] == "worker_lost"
    assert _llen(world, "default") == 0  # not queued again


def _llen(world: World, queue: str) -> int:
    return world.rt.redis.llen(queue)
