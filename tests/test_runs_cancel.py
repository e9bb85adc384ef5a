"""Cancellation of runs (issue 3): queued, running (sync, async), blocked (hard stop), finished.

The session worker and this module's extra worker run with RUNCAST_CANCEL_GRACE=1.
"""

from __future__ import annotations

import time
import uuid

import pytest
import redis

from tests.agents_extra import EXITED, MARK, SWALLOWED
from tests.log_check import check_log
from tests.runs_support import (
    eventually,
    extra_worker_fixture,
    finish,
    node,
    read_events,
    types,
)

pytestmark = pytest.mark.usefixtures("worker")

WORKER_NAME = "xcancel"
extra_worker = extra_worker_fixture(WORKER_NAME)


@pytest.fixture
def client(redis_url):
    c = redis.Redis.from_url(redis_url)
    yield c
    c.close()


def wait_running(runcast, run_id: str, timeout: float = 30) -> dict:
    return eventually(
        lambda: (r := runcast.get_run(run_id)) and r["status"] == "running" and r,
        timeout=timeout, what=f"run {run_id} running",
    )


def hard_stopped(worker, run_id: str) -> bool:
    return f"run {run_id} ignored its cancellation" in worker.output()


# -- queued ----------------------------------------------------------------------------------------

def test_cancel_a_queued_run_ends_it_at_once(runcast, extra_worker, client):
    run_id = runcast.submit("t_idle", {"x": 1})  # no worker consumes the `idle` queue
    assert runcast.get_run(run_id)["status"] == "queued"
    run = runcast.cancel(run_id, reason="changed my mind")
    assert run["status"] == "cancelled"  # at once, in the answer to cancel itself
    assert run["cancel_requested"] is True
    assert run["finished_at"] is not None and run["started_at"] is None
    events = read_events(run_id)
    assert [(e.seq, e.type, e.data) for e in events] == [
        (1, "cancelled", {"reason": "changed my mind"})]
    check_log(run, events, started=False)
    with pytest.raises(runcast.RunConflict):
        runcast.cancel(run_id)
    assert client.get(MARK.format(run_id=run_id)) is None


def test_a_cancelled_queued_run_never_runs_when_its_message_arrives(runcast, extra_worker,
                                                                    client):
    run_id = runcast.submit("t_gated", {})  # `gate` is consumed only once we say so
    runcast.cancel(run_id)
    control = runcast.app.control
    replies = control.add_consumer("gate", destination=[node(WORKER_NAME)], reply=True)
    assert replies, "the extra worker did not answer add_consumer"
    try:
        # the message is delivered and taken (the queue drains) ...
        eventually(lambda: client.llen("gate") == 0, timeout=30, what="the gate queue to drain")
        eventually(lambda: f"run {run_id} attempt 1 skipped" in extra_worker.output(),
                   timeout=30, what="the worker to skip the cancelled run")
        # ... and a later run on that queue does run, so the consumer is really there
        marker_run = runcast.submit("t_gated", {})
        run, _ = finish(runcast, marker_run)
        assert run["status"] == "succeeded"
        assert client.get(MARK.format(run_id=marker_run)) == b"1"
    finally:
        control.cancel_consumer("gate", destination=[node(WORKER_NAME)], reply=True)
    # ... but the cancelled run's handler never ran, and its log did not change
    assert client.get(MARK.format(run_id=run_id)) is None
    run = runcast.get_run(run_id)
    assert run["status"] == "cancelled" and run["attempt"] == 0
    assert types(read_events(run_id)) == ["cancelled"]


# -- running ---------------------------------------------------------------------------------------

def test_a_cancel_accepted_as_the_handler_returns_still_ends_the_run_cancelled(runcast,
                                                                              extra_worker):
    """DESIGN: a cancelled running run ends `cancelled`. The cancel's 202 came after the record
    was flagged; the handler returned before the worker heard of it: the cancel still wins."""
    run_id = runcast.submit("t_cancelled_as_it_returns", {"reason": "too late?"})
    run, events = finish(runcast, run_id)  # checks the log too
    assert run["status"] == "cancelled" and run["output"] is None, run
    assert [(e.type, e.data) for e in events] == [
        ("started", events[0].data), ("cancelled", {"reason": "too late?"})]


def test_cancel_a_running_cooperative_run(runcast, worker):
    run_id = runcast.submit("sleep", {"seconds": 60})
    wait_running(runcast, run_id)
    run = runcast.cancel(run_id, reason="stop it")
    assert run["cancel_requested"] is True
    assert run["status"] in ("running", "cancelled")
    run, events = finish(runcast, run_id)
    assert run["status"] == "cancelled"
    assert events[-1].data == {"reason": "stop it"}
    assert set(types(events)[1:-1]) <= {"heartbeat"}
    time.sleep(0.5)  # a hard stop would be logged right after the grace period
    assert not hard_stopped(worker, run_id)
    with pytest.raises(runcast.RunConflict):
        runcast.cancel(run_id)


def test_cancel_an_async_handler_cancels_its_task(runcast, worker):
    # the handler awaits asyncio.sleep(30) before its first token: only task cancellation
    # ends it within the grace period (it never reaches an emit or a check)
    run_id = runcast.submit("async_tokens", {"text": "never said", "delay": 30})
    wait_running(runcast, run_id)
    time.sleep(0.2)  # let it reach its await
    runcast.cancel(run_id, reason="async")
    run, events = finish(runcast, run_id)
    assert run["status"] == "cancelled"
    assert types(events) == ["started", "cancelled"]
    assert events[-1].data == {"reason": "async"}
    time.sleep(0.5)
    assert not hard_stopped(worker, run_id)


def test_cancel_a_blocked_handler_stops_it_hard_and_the_worker_goes_on(runcast, worker):
    run_id = runcast.submit("block", {"seconds": 60})
    wait_running(runcast, run_id)
    runcast.cancel(run_id, reason="hard")
    run, events = finish(runcast, run_id)
    assert run["status"] == "cancelled"
    assert types(events) == ["started", "cancelled"]
    assert events[-1].data == {"reason": "hard"}
    eventually(lambda: hard_stopped(worker, run_id), timeout=30, what="the hard stop")
    # the worker keeps serving: more runs than it has processes all succeed
    ids = [runcast.submit("echo", {"after": i}) for i in range(8)]
    for i, other in enumerate(ids):
        other_run, _ = finish(runcast, other)
        assert other_run["status"] == "succeeded" and other_run["output"] == {"echo": {"after": i}}
    # no late write changed the cancelled run
    run = runcast.get_run(run_id)
    assert run["status"] == "cancelled" and run["output"] is None
    assert types(read_events(run_id)) == ["started", "cancelled"]


def test_run_cancelled_is_not_swallowed_by_except_exception(runcast, extra_worker, client):
    run_id = runcast.submit("t_swallow", {"seconds": 60}, events="minimal")
    wait_running(runcast, run_id)
    time.sleep(0.2)
    runcast.cancel(run_id)
    run, events = finish(runcast, run_id)
    assert run["status"] == "cancelled"
    assert types(events) == ["started", "cancelled"]
    # the handler's `finally` ran: it left by RunCancelled, not by a hard stop
    eventually(lambda: client.get(EXITED.format(run_id=run_id)), timeout=10,
               what="the handler to exit")
    assert client.get(SWALLOWED.format(run_id=run_id)) is None
    assert not hard_stopped(extra_worker, run_id)


def test_cancel_while_many_run(runcast):
    ids = [runcast.submit("sleep", {"seconds": 30}) for _ in range(3)]
    keep = runcast.submit("countdown", {"steps": 3, "delay": 0.3})
    for run_id in ids:
        wait_running(runcast, run_id)
    for run_id in ids:
        runcast.cancel(run_id)
    for run_id in ids:
        run, _ = finish(runcast, run_id)
        assert run["status"] == "cancelled"
    run, _ = finish(runcast, keep)
    assert run["status"] == "succeeded"  # a cancel reaches only its own run


def test_cancel_finished_or_unknown(runcast):
    run_id = runcast.submit("echo", {})
    finish(runcast, run_id)
    with pytest.raises(runcast.RunConflict):
        runcast.cancel(run_id)
    assert runcast.get_run(run_id)["status"] == "succeeded"
    assert types(read_events(run_id)) == ["started", "complete"]
    failed = runcast.submit("fail", {})
    finish(runcast, failed)
    with pytest.raises(runcast.RunConflict):
        runcast.cancel(failed)
    with pytest.raises(runcast.RunNotFound):
        runcast.cancel(uuid.uuid4().hex)
