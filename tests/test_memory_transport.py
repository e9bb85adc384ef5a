"""The embedded mode's broker (tasks/memory_transport.py): kombu's in-memory transport whose
drain ends early once the worker is stopping, so an embedded worker stops without waiting out
Celery's 2 s drains; any other drain waits as long as asked."""

from __future__ import annotations

import time

import pytest
from celery.worker import state
from kombu import Connection, Consumer, Queue

from tasks import service
from tasks.memory_transport import TRANSPORT
from tasks.runtime import Runtime
from tasks.settings import Settings

WAIT_S = 30


@pytest.fixture
def drained():
    """A connection on the transport consuming an empty queue of its own."""
    with Connection("memory://localhost/", transport=TRANSPORT) as connection:
        queue = Queue(f"drain-test-{time.monotonic_ns()}")
        with Consumer(connection, [queue], callbacks=[lambda body, message: None]):
            yield connection


def test_a_drain_waits_as_long_as_asked_while_no_worker_stops(drained):
    assert state.should_stop is None and state.should_terminate is None
    began = time.monotonic()
    with pytest.raises(TimeoutError):
        drained.drain_events(timeout=0.3)
    assert 0.3 <= time.monotonic() - began < 10


@pytest.mark.parametrize("flag", ["should_stop", "should_terminate"])
def test_a_drain_ends_early_once_the_worker_stops(drained, monkeypatch, flag):
    monkeypatch.setattr(state, flag, 0)  # what celery.contrib.testing's worker sets to stop
    began = time.monotonic()
    with pytest.raises(TimeoutError):
        drained.drain_events(timeout=30)
    assert time.monotonic() - began < 10  # a slice, not the 30 s asked


def test_an_embedded_runtime_closes_without_waiting_out_a_drain():
    rt = Runtime(Settings(redis_url="memory://", agents="tasks.demo"))
    rt.start_embedded_worker(concurrency=2)
    try:
        run_id = service.submit(rt, "echo", {"n": 1})
        assert service.wait(rt, run_id, WAIT_S)["status"] == "succeeded"
    finally:
        began = time.monotonic()
        rt.close()
    # Celery's blocking loop drains 2 s at a time and checks its stop flag once more after it is
    # set: 2 to 4 s on kombu's own memory transport
    assert time.monotonic() - began < 1.5
