"""`last_checkpoint` (DESIGN.md, "Agent code"): a worker SIGKILLed mid-run, and attempt 2 of the
run resumes from the last checkpoint attempt 1 emitted instead of starting over.

Like test_runs_lost.py, the test has its own redis-server, so that only the workers it starts
consume its queues and reap its runs.
"""

from __future__ import annotations

import signal
import time

import pytest

from tests.agents_streaming import AGENTS, QUEUE
from tests.log_check import check_log
from tests.lost_support import LOST_DEADLINE_S, World
from tests.runs_support import eventually, node

pytestmark = pytest.mark.slow

STEPS = 12




def checkpoints(world: World, run_id: str) -> list[dict]:
    return [e.data for e in world.events(run_id) if e.type == "checkpoint"]


def test_attempt_two_resumes_from_the_last_checkpoint(world):
    lost = world.worker("ck-lost", queues=QUEUE, RUNCAST_AGENTS=AGENTS)
    run_id = world.submit("t_checkpointed", {"steps": STEPS, "delay": 0.3},
                          RUNCAST_AGENTS=AGENTS)
    eventually(lambda: len(checkpoints(world, run_id)) >= 3, timeout=30,
               what="attempt 1 to checkpoint three steps")
    lost.kill(signal.SIGKILL)
    killed_at = time.monotonic()
    done_before = checkpoints(world, run_id)[-1]["data"]["done"]
    assert 3 <= done_before < STEPS

    world.worker("ck-again", queues=QUEUE, RUNCAST_AGENTS=AGENTS)
    run = eventually(lambda: (r := world.run(run_id))["status"] not in ("queued", "running")
                     and r, timeout=LOST_DEADLINE_S + 30, interval=0.2, what="the run to end")
    assert time.monotonic() - killed_at < LOST_DEADLINE_S + 30
    events = world.events(run_id)
    check_log(run, events, attempts=2)
    starts = [e for e in events if e.type == "started"]
    assert [s.data["worker"] for s in starts] == [node("ck-lost"), node("ck-again")]

    assert run["status"] == "succeeded"
    last_of_attempt_1 = [e for e in events if e.type == "checkpoint" and e.seq < starts[1].seq][-1]
    assert last_of_attempt_1.data["data"]["done"] == done_before
    assert run["output"] == {
        "total": sum(range(1, STEPS + 1)),  # right, though each attempt counted only a part
        "attempt": 2,
        "resumed_from": {"name": "counted", "data": last_of_attempt_1.data["data"]},
    }
    # attempt 2 went on from the step after the checkpoint: no step was counted twice
    done = [c["data"]["done"] for c in checkpoints(world, run_id)]
    assert done == list(range(1, STEPS + 1))
