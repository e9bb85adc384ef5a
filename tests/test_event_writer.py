"""The event writer's batches (streaming/backends/writer.py): the events of many runs go to Redis
in a few script calls, each run's log complete and in order, and one run whose events Redis
refuses costs only that run's events."""

from __future__ import annotations

import logging
import uuid

import pytest
import redis

from streaming import RedisEventBackend
from streaming.constants import EVENTS_CHANNEL, EVENTS_KEY, WRITE_CALL_RUNS
from tests.test_backends import make, seqs

WAIT_S = 20
RUNS = 2 * WRITE_CALL_RUNS + 7  # three script calls, the last one short
EVENTS = 3


@pytest.fixture
def writer_backend(redis_url):
    backend = RedisEventBackend(redis_url)
    yield backend
    backend.close()


def interleaved(run_ids: list[str]) -> list:
    """Event 1 of every run, then event 2 of every run, ...: as a thousand runs emit."""
    return [make(run_id, seq) for seq in range(1, EVENTS + 1) for run_id in run_ids]


def test_one_batch_of_many_runs_writes_every_log_in_order(writer_backend, redis_url):
    run_ids = [uuid.uuid4().hex for _ in range(RUNS)]
    client = redis.Redis.from_url(redis_url)
    pubsub = client.pubsub()
    pubsub.subscribe(EVENTS_CHANNEL.format(run_id=run_ids[-1]))
    assert pubsub.get_message(timeout=WAIT_S)["type"] == "subscribe"  # before the write
    try:
        writer_backend._writer._write(interleaved(run_ids))
        for run_id in run_ids:
            assert seqs(writer_backend.read(run_id)) == list(range(1, EVENTS + 1)), run_id
            assert client.ttl(EVENTS_KEY.format(run_id=run_id)) > 0
        message = pubsub.get_message(timeout=WAIT_S)  # the run's events, in one message
        assert message is not None and message["data"].count(b'"seq"') == EVENTS
    finally:
        pubsub.close()
        client.close()


def test_a_refused_run_costs_only_its_own_events(writer_backend, redis_url, caplog):
    run_ids = [uuid.uuid4().hex for _ in range(5)]
    bad = run_ids[2]
    client = redis.Redis.from_url(redis_url)
    try:
        client.set(EVENTS_KEY.format(run_id=bad), "not a stream")
        with caplog.at_level(logging.ERROR, logger="streaming.backends.writer"):
            writer_backend._writer._write(interleaved(run_ids))
        for run_id in run_ids:
            if run_id != bad:
                assert seqs(writer_backend.read(run_id)) == list(range(1, EVENTS + 1)), run_id
        assert any("WRONGTYPE" in r.getMessage() for r in caplog.records), caplog.text
        assert client.get(EVENTS_KEY.format(run_id=bad)) == b"not a stream"
    finally:
        client.delete(EVENTS_KEY.format(run_id=bad))
        client.close()


def test_runs_with_one_event_and_with_several_share_a_call(writer_backend, redis_url):
    """The script reads a run's one event whole and splits several; a retried event is skipped
    and announced to no one, whichever way it came."""
    one, several, again = (uuid.uuid4().hex for _ in range(3))
    client = redis.Redis.from_url(redis_url)
    pubsub = client.pubsub()
    pubsub.subscribe(EVENTS_CHANNEL.format(run_id=one), EVENTS_CHANNEL.format(run_id=again))
    for _ in range(2):
        assert pubsub.get_message(timeout=WAIT_S)["type"] == "subscribe"
    try:
        writer = writer_backend._writer
        ones = [make(one, 1), make(one, 2)]
        first = [ones[0], make(several, 1), make(several, 2), make(several, 3), make(again, 1)]
        assert writer._write(first) == ({}, None)
        assert writer._write([make(again, 1), ones[1], make(again, 2)]) == ({}, None)
        assert writer._write([make(again, 2)]) == ({}, None)  # the whole call retried
        assert writer_backend.read(one) == ones
        assert seqs(writer_backend.read(several)) == [1, 2, 3]
        assert seqs(writer_backend.read(again)) == [1, 2]
        published = []
        while (message := pubsub.get_message(timeout=1)) is not None:
            published.append((message["channel"].decode(), message["data"].count(b'"seq"')))
        # in each call, its runs in the order of their first event
        assert published == [(EVENTS_CHANNEL.format(run_id=one), 1),
                             (EVENTS_CHANNEL.format(run_id=again), 1),
                             (EVENTS_CHANNEL.format(run_id=again), 1),
                             (EVENTS_CHANNEL.format(run_id=one), 1)]
    finally:
        pubsub.close()
        client.close()
