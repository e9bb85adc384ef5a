"""Celery's own time limits, per worker and per agent, end a run failed/timeout (tasks/time_limits.py).

Two prefork workers of this module: `xlimits` runs with `--soft-time-limit 1 --time-limit 4` and a
cancel grace of 10 s (so a handler deaf to its cancellation meets the hard limit before it is
abandoned); `xagentlimits` runs without limits, its agents carry theirs.
"""

from __future__ import annotations

import time

import pytest
from celery.exceptions import TimeLimitExceeded

from streaming.events import envelope_parts, utc_now_iso
from tasks import registry, time_limits
from tests.log_check import check_log
from tests.runs_support import finish, read_events
from tests.services import start_worker

AGENTS = "tasks.demo,tests.agents_limits"


@pytest.fixture(scope="module")
def agents(runcast):
    import tests.agents_limits  # noqa: F401 - the test process submits them too


@pytest.fixture(scope="module")
def limited_worker(redis_url, agents):
    process = start_worker(redis_url, name="xlimits", concurrency=2, RUNCAST_AGENTS=AGENTS,
                           RUNCAST_CANCEL_GRACE="10",
                           extra_args=["-Q", "limits", "--soft-time-limit", "1",
                                       "--time-limit", "4"])
    yield process
    process.stop()


@pytest.fixture(scope="module")
def agent_worker(redis_url, agents):
    process = start_worker(redis_url, name="xagentlimits", concurrency=2, RUNCAST_AGENTS=AGENTS,
                           extra_args=["-Q", "limits_agent"])
    yield process
    process.stop()


def run_to_end(runcast, agent: str, payload: dict, within: float) -> tuple[dict, list]:
    """Submit, wait for the end (one attempt, its log checked), and check it came `within` s."""
    began = time.monotonic()
    run, events = finish(runcast, runcast.submit(agent, payload), timeout=30)
    assert time.monotonic() - began < within, (run, time.monotonic() - began)
    return run, events


def assert_timed_out(runcast, run: dict, events: list, details: dict) -> None:
    """failed/timeout once, on attempt 1, the terminal event last; and it stays so."""
    assert run["status"] == "failed" and run["attempt"] == 1, run
    assert run["error"]["code"] == "timeout" and run["error"]["details"] == details, run
    assert [e.type for e in events].count("error") == 1 and events[-1].type == "error"
    assert events[-1].data == run["error"]
    time.sleep(1.5)  # no late second ending (the other process, the reaper)
    again = runcast.get_run(run["run_id"])
    assert (again["status"], again["error"], again["last_seq"]) == (
        "failed", run["error"], run["last_seq"])
    check_log(again, read_events(run["run_id"]), attempts=1)


@pytest.mark.parametrize("agent", ["l_sleep", "l_async_sleep"])
def test_a_workers_soft_time_limit_ends_the_run_failed_timeout(runcast, limited_worker, agent):
    run, events = run_to_end(runcast, agent, {"seconds": 30}, within=6)
    assert_timed_out(runcast, run, events, {"limit": "celery_soft_time_limit",
                                            "soft_time_limit": 1})
    assert "Celery's soft time limit of 1 s" in run["error"]["error"]


def test_a_handler_deaf_to_the_soft_limit_ends_at_the_hard_limit(runcast, limited_worker):
    run, events = run_to_end(runcast, "l_block", {"seconds": 30}, within=10)
    assert_timed_out(runcast, run, events, {"limit": "celery_time_limit", "time_limit": 4})
    assert "Hard time limit (4" in limited_worker.output()


def test_a_run_within_the_limits_succeeds(runcast, limited_worker):
    run, _ = run_to_end(runcast, "l_sleep", {"seconds": 0.2}, within=6)
    assert run["status"] == "succeeded" and run["output"] == {"slept": 0.2}


def test_an_agents_soft_time_limit(runcast, agent_worker):
    run, events = run_to_end(runcast, "l_agent_soft", {"seconds": 30}, within=6)
    assert_timed_out(runcast, run, events, {"limit": "celery_soft_time_limit",
                                            "soft_time_limit": 1})


def test_an_agents_hard_time_limit(runcast, agent_worker):
    run, events = run_to_end(runcast, "l_agent_hard", {"seconds": 30}, within=6)
    assert_timed_out(runcast, run, events, {"limit": "celery_time_limit", "time_limit": 1})


def test_an_agent_without_limits_is_not_limited_by_another_agents(runcast, agent_worker):
    run, _ = run_to_end(runcast, "l_agent_free", {"seconds": 1.5}, within=8)
    assert run["status"] == "succeeded", run


def test_the_limits_reach_the_agents_celery_task(runcast, agents):
    tasks = runcast.runtime().app.tasks
    assert tasks["runcast.agent.l_agent_soft"].soft_time_limit == 1
    assert tasks["runcast.agent.l_agent_hard"].time_limit == 1
    assert tasks["runcast.agent.l_agent_free"].time_limit is None
    for option in ("soft_time_limit", "time_limit"):
        for bad in (0, -1, True):
            with pytest.raises(ValueError, match=option):
                registry.agent("l_never", **{option: bad})


def test_an_ending_outside_the_handler_or_twice_is_fenced(runcast, agents):
    """The soft limit striking while the task claims or finishes (no handler to cancel) still
    ends the run failed/timeout; a second ending (the hard limit's, in the main process) or one
    of another attempt changes nothing."""
    rt = runcast.runtime()
    run_id = runcast.submit("l_idle", {})  # no worker consumes `limits_idle`: claimed here
    started = envelope_parts(run_id, "started", {"agent": "l_idle", "attempt": 1, "worker": "t"})
    assert rt.store.claim(run_id, 1, {"worker": "t", "started_at": utc_now_iso()}, started,
                          heartbeat_deadline=time.time() + 30).ok
    task = rt.app.tasks["runcast.agent.l_idle"]
    assert time_limits.end_past_hard_limit(rt, [run_id, 2], {}, TimeLimitExceeded(3)) is None
    assert runcast.get_run(run_id)["status"] == "running"  # attempt 2 is not the one running
    result = time_limits.end_outside_supervision(rt, task, run_id, 1)
    error = {"error": "the run took longer than Celery's soft time limit of 1 s",
             "code": "timeout", "details": {"limit": "celery_soft_time_limit",
                                            "soft_time_limit": 1}}
    assert result == {"run_id": run_id, "status": "failed", "error": error}
    time_limits.end_past_hard_limit(rt, [run_id, 1], {}, TimeLimitExceeded(3))
    assert time_limits.end_outside_supervision(rt, task, run_id, 1) == {
        "run_id": run_id, "status": "failed"}
    run, events = finish(runcast, run_id, timeout=5)
    assert run["error"] == error and [e.type for e in events] == ["started", "error"]
