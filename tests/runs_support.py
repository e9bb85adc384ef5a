"""Helpers of the run tests (test_runs*.py): log invariants, waiting, an extra worker."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from typing import Any

import pytest

from streaming.events import Event
from tests.services import Process, start_worker

EXTRA_AGENTS = "tasks.demo,tests.agents_extra"
TERMINAL_EVENT = {"succeeded": "complete", "failed": "error", "cancelled": "cancelled"}
TERMINAL_STATUSES = frozenset(TERMINAL_EVENT)


def node(name: str) -> str:
    """The Celery node name of a worker started with `-n NAME@%h`."""
    return f"{name}@{socket.gethostname()}"


def eventually(check: Callable[[], Any], timeout: float = 30, interval: float = 0.05,
               what: str = "condition") -> Any:
    """Poll `check()` until it returns something truthy; fail after `timeout` (a hang guard)."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def check_log(run: dict[str, Any], events: list[Event], *, attempts: int = 1,
              started: bool = True) -> None:
    """The contract's invariants of one terminal run and its event log."""
    run_id = run["run_id"]
    assert run["status"] in TERMINAL_STATUSES, run
    assert events, f"run {run_id} has no events"
    seqs = [e.seq for e in events]
    assert seqs == list(range(1, len(events) + 1)), f"seq not contiguous from 1: {seqs}"
    assert {e.run_id for e in events} == {run_id}
    starts = [e for e in events if e.type == "started"]
    if started:
        assert events[0].type == "started", [e.type for e in events]
        assert [s.data["attempt"] for s in starts] == list(range(1, attempts + 1))
        for s in starts:
            assert s.data["agent"] == run["agent"]
            assert isinstance(s.data["worker"], str) and s.data["worker"]
        assert run["attempt"] == attempts
    else:
        assert starts == []
    terminals = [e for e in events if e.is_terminal]
    assert len(terminals) == 1, f"terminal events: {[e.type for e in terminals]}"
    assert events[-1].is_terminal, "the terminal event is not last"
    assert events[-1].type == TERMINAL_EVENT[run["status"]], (run["status"], events[-1].type)
    assert run["last_seq"] == events[-1].seq
    assert run["finished_at"]
    last = events[-1].data
    if run["status"] == "succeeded":
        assert run["output"] == last["output"]
        assert isinstance(last["latency_seconds"], int | float) and last["latency_seconds"] >= 0
        assert last["metadata"] == {}
        assert run["error"] is None
    elif run["status"] == "failed":
        assert run["error"] == last
        assert set(last) == {"error", "code", "details"}
        assert run["output"] is None
    else:
        assert set(last) == {"reason"}


def finish(tasks_pkg, run_id: str, timeout: float = 30, **check: Any) -> tuple[dict, list[Event]]:
    """Wait for the run to end (a generous hang guard), check its log, return both."""
    run = tasks_pkg.wait(run_id, timeout=timeout)
    assert run["status"] in TERMINAL_STATUSES, f"run still {run['status']} after {timeout} s"
    events = read_events(run_id)
    check_log(run, events, **check)
    return run, events


def read_events(run_id: str) -> list[Event]:
    from tasks.celeryapp import runtime

    return runtime().events.read(run_id)


def types(events: list[Event]) -> list[str]:
    return [e.type for e in events]


def extra_worker_fixture(name: str, queues: str = "extra", concurrency: int = 2):
    """A module-scoped worker that also loads tests.agents_extra and consumes `queues`."""

    @pytest.fixture(scope="module")
    def extra_worker(redis_url, runcast, worker) -> Process:
        import tests.agents_extra  # noqa: F401 - the test process registers them too

        process = start_worker(redis_url, name=name, concurrency=concurrency,
                               extra_args=["-Q", queues], RUNCAST_AGENTS=EXTRA_AGENTS)
        yield process
        process.stop()

    return extra_worker
