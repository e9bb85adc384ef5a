"""Streaming backends (DESIGN.md, "Framework-native streaming"): the routing rules of
StreamContext with QueueBackend, a refusing, an unavailable and a raising backend, in queue
mode and over the memory and Redis event backends; `last_checkpoint` read from the log."""

from __future__ import annotations

import logging
import threading

import pytest

from streaming import (
    Event,
    QueueBackend,
    StreamContext,
    StreamingBackend,
    emit_update,
)
from streaming.context import current_context

WAIT_S = 20


class Recording:
    """A streaming backend that answers `accept` (a bool, or a callable of the event)."""

    name = "recording"

    def __init__(self, accept=True, available=True) -> None:
        self.accept, self.available = accept, available
        self.offered: list[Event] = []

    def is_available(self) -> bool:
        return self.available

    def emit(self, event: Event) -> bool:
        self.offered.append(event)
        return self.accept(event) if callable(self.accept) else self.accept


class Raising(Recording):
    name = "raising"

    def emit(self, event: Event) -> bool:
        self.offered.append(event)
        raise ConnectionError("the framework's stream is gone")


class RaisingAvailability(Recording):
    name = "raising-availability"

    def is_available(self) -> bool:
        raise RuntimeError("cannot tell")


def emit_some(ctx: StreamContext) -> None:
    ctx.sync_emit_started(agent="a")
    ctx.sync_emit_token("Hello ")
    emit_update_ok = ctx.sync_emit_update("Searching")
    assert emit_update_ok is not None
    ctx.sync_emit("custom:found", n=3)
    ctx.sync_checkpoint("state", {"i": 1})
    ctx.sync_emit_complete(output={"ok": True})


def types(events) -> list[str]:
    return [e.type for e in events]


ALL_TYPES = ["started", "token", "update", "custom:found", "checkpoint", "complete"]


def test_the_protocol_and_queue_backend_are_exported():
    queue = QueueBackend()
    assert isinstance(queue, StreamingBackend)
    assert isinstance(Recording(), StreamingBackend)
    assert isinstance(queue, list) and queue == [] and queue.name
    assert queue.is_available() is True
    ctx = StreamContext("r", queue_mode=True, streaming_backend=queue)
    assert ctx.streaming_backend is queue
    assert StreamContext("r", queue_mode=True).streaming_backend is None


# -- queue mode ---------------------------------------------------------------------------------
def test_queue_mode_accepted_events_are_not_queued():
    queue = QueueBackend()
    ctx = StreamContext("r", queue_mode=True, streaming_backend=queue)
    emit_some(ctx)
    assert ctx.drain_queued_events() == []
    assert len(queue) == 6
    drained = queue.drain()
    assert types(drained) == ALL_TYPES
    assert [e.seq for e in drained] == [1, 2, 3, 4, 5, 6]
    assert drained[2].data == {"text": "Searching", "content": {}}
    assert queue.drain() == [] and len(queue) == 0


def test_queue_mode_refused_and_unavailable_events_are_queued():
    refusing = Recording(accept=lambda e: e.type != "token")  # refuses tokens only
    ctx = StreamContext("r", queue_mode=True, streaming_backend=refusing)
    emit_some(ctx)
    assert types(refusing.offered) == ALL_TYPES  # every event is offered first
    assert types(ctx.drain_queued_events()) == ["token"]

    unavailable = Recording(available=False)
    ctx = StreamContext("r", queue_mode=True, streaming_backend=unavailable)
    emit_some(ctx)
    assert unavailable.offered == []  # never offered while unavailable
    assert types(ctx.drain_queued_events()) == ALL_TYPES


@pytest.mark.parametrize("backend_cls", [Raising, RaisingAvailability])
def test_a_raising_backend_counts_as_unavailable(backend_cls, caplog):
    failing = backend_cls()
    ctx = StreamContext("r", queue_mode=True, streaming_backend=failing)
    with caplog.at_level(logging.WARNING, logger="streaming.context"):
        emit_some(ctx)  # no error reaches the agent
    events = ctx.drain_queued_events()
    assert types(events) == ALL_TYPES and [e.seq for e in events] == [1, 2, 3, 4, 5, 6]
    assert any(failing.name in r.getMessage() for r in caplog.records)


def test_only_events_that_pass_the_filter_are_offered():
    queue = QueueBackend()
    ctx = StreamContext("r", queue_mode=True, events="chat", streaming_backend=queue)
    emit_some(ctx)
    assert types(queue) == ["started", "token", "update", "complete"]
    assert [e.seq for e in queue] == [1, 2, 3, 4]  # dropped events took no seq


def test_module_emit_update_goes_through_the_streaming_backend():
    queue = QueueBackend()
    ctx = StreamContext("r", queue_mode=True, streaming_backend=queue)
    with current_context(ctx):
        emit_update("plain")
        emit_update("with", content={"q": 1})
    assert [e.data for e in queue.drain()] == [
        {"text": "plain", "content": {}}, {"text": "with", "content": {"q": 1}}]


def test_the_streaming_backend_can_be_attached_later():
    ctx = StreamContext("r", queue_mode=True)
    ctx.sync_emit_token("a")
    queue = QueueBackend()
    ctx.streaming_backend = queue
    ctx.sync_emit_token("b")
    ctx.streaming_backend = None
    ctx.sync_emit_token("c")
    assert [e.data["content"] for e in ctx.drain_queued_events()] == ["a", "c"]
    assert [e.data["content"] for e in queue] == ["b"]


def test_offers_follow_seq_order_across_threads():
    queue = QueueBackend()
    ctx = StreamContext("r", queue_mode=True, streaming_backend=queue)

    def work() -> None:
        for _ in range(500):
            ctx.sync_emit_token("t")

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [e.seq for e in queue] == list(range(1, 2001))


# -- with an event backend: the log is always complete ------------------------------------------
@pytest.mark.parametrize("make_streaming", [
    QueueBackend,
    lambda: Recording(accept=False),
    lambda: Recording(available=False),
    Raising,
], ids=["accepting", "refusing", "unavailable", "raising"])
async def test_the_log_is_complete_whatever_the_streaming_backend_does(backend, run_id,
                                                                       make_streaming):
    streaming = make_streaming()
    ctx = StreamContext(run_id, backend=backend, streaming_backend=streaming)
    emit_some(ctx)
    ctx.flush(WAIT_S)
    logged = backend.read(run_id)
    assert types(logged) == ALL_TYPES
    assert [e.seq for e in logged] == [1, 2, 3, 4, 5, 6]
    assert ctx.drain_queued_events() == []
    offered = list(streaming) if isinstance(streaming, QueueBackend) else streaming.offered
    if isinstance(streaming, Recording) and not streaming.available:
        assert offered == []
    else:
        assert [e.to_json() for e in offered] == [e.to_json() for e in logged]


# -- last_checkpoint ----------------------------------------------------------------------------
async def test_last_checkpoint_is_the_last_one_of_earlier_attempts(backend, run_id):
    first = StreamContext(run_id, backend=backend)
    assert first.last_checkpoint is None
    first.sync_emit_started(agent="a", attempt=1)
    first.sync_checkpoint("one", {"i": 1})
    first.sync_emit_token("x")
    first.sync_checkpoint("two", {"i": 2, "items": ["a", "b"]})
    first.sync_emit_token("y")
    assert first.last_checkpoint is None  # attempt 1 has no earlier attempt
    first.flush(WAIT_S)

    second = StreamContext(run_id, backend=backend, attempt=2)
    second.sync_checkpoint("three", {"i": 3})  # this attempt's own checkpoint does not count
    assert second.last_checkpoint == {"name": "two", "data": {"i": 2, "items": ["a", "b"]}}
    second.flush(WAIT_S)
    third = StreamContext(run_id, backend=backend, attempt=3)
    assert third.last_checkpoint == {"name": "three", "data": {"i": 3}}


async def test_last_checkpoint_is_none_without_one(backend, run_id):
    first = StreamContext(run_id, backend=backend)
    first.sync_emit_started(agent="a")
    first.sync_emit_token("x")
    first.flush(WAIT_S)
    assert StreamContext(run_id, backend=backend, attempt=2).last_checkpoint is None
    assert StreamContext(run_id, queue_mode=True, attempt=2).last_checkpoint is None


async def test_last_checkpoint_looks_back_past_many_events(backend, run_id):
    first = StreamContext(run_id, backend=backend)
    first.sync_checkpoint("early", {"n": 0})
    for i in range(1200):  # more than one page of the Redis look-back
        first.sync_emit_token(f"t{i}")
    first.flush(WAIT_S)
    second = StreamContext(run_id, backend=backend, attempt=2)
    assert second.last_checkpoint == {"name": "early", "data": {"n": 0}}
