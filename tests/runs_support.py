"""Helpers of the run tests (test_runs*.py): finishing a run (its log checked by
tests.log_check), waiting, an extra worker."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from typing import Any

import pytest

from streaming.events import Event
from tests.log_check import TERMINAL_STATUSES, check_log
from tests.services import Process, start_worker

EXTRA_AGENTS = "tasks.demo,tests.agents_extra"


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


def finish(tasks_pkg, run_id: str, timeout: float = 30, attempts: int = 1,
           started: bool = True) -> tuple[dict, list[Event]]:
    """Wait for the run to end (a generous hang guard), check its log (one attempt unless told),
    return both."""
    run = tasks_pkg.wait(run_id, timeout=timeout)
    assert run["status"] in TERMINAL_STATUSES, f"run still {run['status']} after {timeout} s"
    events = read_events(run_id)
    check_log(run, events, attempts=attempts, started=started)
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
