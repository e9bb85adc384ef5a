"""The RunStore contract, run against every store (memory and Redis), like tests/test_backends.py
runs the EventBackend contract: the same transitions, the same answers, the same shapes."""

import threading
import time
import uuid

import pytest
import redis

from streaming import MemoryEventBackend, RedisEventBackend
from streaming.events import envelope_parts, utc_now_iso
from tasks.errors import RunNotFound
from tasks.memory_store import MemoryRunStore
from tasks.redis_store import RedisRunStore
from tasks.store import CLAIM_FIELDS, TERMINAL, new_record

WAIT_S = 10  # generous bound on anything that should take milliseconds
TTL_S = 3600


@pytest.fixture(params=["memory", "redis"])
def parts(request, redis_url):
    """(store, event backend reading the same logs)."""
    if request.param == "memory":
        events = MemoryEventBackend()
        store = MemoryRunStore(events, ttl_s=TTL_S)
    else:
        events = RedisEventBackend(redis_url)
        store = RedisRunStore(redis.Redis.from_url(redis_url), ttl_s=TTL_S, max_events=1000)
    yield store, events
    store.close()
    events.close()


@pytest.fixture
def store(parts):
    return parts[0]


def record(run_id: str | None = None, *, timeout: float | None = 60.0, batch_id=None,
           agent: str = "echo") -> dict[str, str]:
    return new_record(
        run_id or uuid.uuid4().hex, agent, '{"n": 1}', events="all", timeout=timeout,
        metadata={"m": 1}, batch_id=batch_id, idempotency_key=None, request_hash="h",
        created_at=utc_now_iso(),
    )


def queued(store, **options) -> str:
    rec = record(**options)
    store.create([rec])
    return rec["run_id"].strip('"')


def claim(store, run_id: str, attempt: int = 1, *, heartbeat_deadline: float | None = None):
    started = envelope_parts(run_id, "started", {"agent": "echo", "attempt": attempt,
                                                 "worker": "w1"})
    return store.claim(run_id, attempt, {"worker": "w1", "started_at": utc_now_iso()}, started,
                       heartbeat_deadline=heartbeat_deadline or time.time() + 60)


def finish(store, run_id: str, status: str = "succeeded", **options):
    event_type = {"succeeded": "complete", "failed": "error", "cancelled": "cancelled"}[status]
    data = {"output": {"ok": True}, "latency_seconds": 0.1, "metadata": {}}
    fields = {"finished_at": utc_now_iso(), "output": {"ok": True}}
    return store.finish(run_id, status, envelope_parts(run_id, event_type, data), fields,
                        **options)


def cancel(store, run_id: str, reason: str = "stop"):
    return store.cancel(run_id, reason, envelope_parts(run_id, "cancelled", {"reason": reason}),
                        utc_now_iso())


# -- create, read, delete -----------------------------------------------------------------------
def test_create_then_get(store):
    run_id = queued(store)
    run = store.get(run_id)
    assert run["run_id"] == run_id and run["status"] == "queued" and run["attempt"] == 0
    assert run["input"] == {"n": 1} and run["metadata"] == {"m": 1}
    assert run["last_seq"] == 0 and run["cancel_requested"] is False
    assert store.get_many([run_id, "nope"]) == [run, None]
    assert store.statuses([run_id, "nope"]) == ["queued", None]


def test_delete_forgets_the_run(store):
    run_id = queued(store)
    store.delete([run_id])
    assert store.get(run_id) is None
    assert run_id not in [r for r, _ in store.list_ids(None, 100)]


# -- claim ------------------------------------------------------------------------------------
def test_claim_starts_the_run_with_its_started_event(parts):
    store, events = parts
    run_id = queued(store)
    before = time.time()
    outcome = claim(store, run_id)
    assert outcome.ok and outcome.status == "running" and outcome.seq == 1
    # the same shape from every store: what the execution needs, and last_seq
    assert set(outcome.run) == {*CLAIM_FIELDS, "last_seq"}
    assert outcome.run["input"] == {"n": 1} and outcome.run["timeout"] == 60.0
    assert outcome.run["cancel_requested"] is False and outcome.run["last_seq"] == 1
    run = store.get(run_id)
    assert run["status"] == "running" and run["attempt"] == 1 and run["last_seq"] == 1
    # the Lua script keeps the deadline to 14 significant digits (tostring): allow 1 ms
    assert before + 60 - 0.001 <= store_deadline(store, run_id) <= time.time() + 60 + 0.001
    assert [(e.seq, e.type) for e in events.read(run_id)] == [(1, "started")]


def store_deadline(store, run_id: str):
    return store.get(run_id)["deadline"]


def test_a_run_without_timeout_has_no_deadline(store):
    run_id = queued(store, timeout=None)
    assert claim(store, run_id).ok
    assert store_deadline(store, run_id) is None


def test_claim_is_fenced(store):
    run_id = queued(store)
    assert claim(store, run_id, attempt=2).state == "fenced"  # only stored attempt + 1
    assert claim(store, run_id, attempt=1).ok
    again = claim(store, run_id, attempt=1)  # a redelivered message of the same attempt
    assert (again.state, again.status) == ("status", "running")
    assert claim(store, "no-such-run").state == "missing"


# -- heartbeat, stale, reap -------------------------------------------------------------------
def test_heartbeat_keeps_a_running_run_fresh(store):
    run_id = queued(store)
    now = time.time()
    assert claim(store, run_id, heartbeat_deadline=now - 1).ok
    assert run_id in store.stale(now)
    store.heartbeat([run_id], now + 60)
    assert run_id not in store.stale(now)
    assert store.reap(run_id, now, 2).state == "alive"
    finish(store, run_id)
    assert run_id not in store.stale(now + 120)  # an ended run is no longer watched


# -- finish -----------------------------------------------------------------------------------
def test_finish_writes_the_terminal_event_then_the_status(parts):
    store, events = parts
    run_id = queued(store)
    claim(store, run_id)
    outcome = finish(store, run_id, attempt=1)
    assert outcome.ok and outcome.status == "succeeded" and outcome.seq == 2
    run = store.get(run_id)
    assert run["status"] == "succeeded" and run["output"] == {"ok": True}
    assert run["finished_at"] is not None and run["last_seq"] == 2
    assert [(e.seq, e.type) for e in events.read(run_id)] == [(1, "started"), (2, "complete")]


def test_terminal_is_final(parts):
    store, events = parts
    run_id = queued(store)
    claim(store, run_id)
    assert finish(store, run_id, "failed").ok
    late = finish(store, run_id, "succeeded")
    assert (late.state, late.status) == ("terminal", "failed")
    assert (cancel(store, run_id).state, store.get(run_id)["status"]) == ("terminal", "failed")
    assert [e.type for e in events.read(run_id)] == ["started", "error"]  # exactly one terminal


def test_finish_is_fenced_by_status_and_attempt(store):
    run_id = queued(store)
    assert finish(store, run_id).state == "status"  # still queued: expect running
    claim(store, run_id)
    assert finish(store, run_id, attempt=2).state == "fenced"
    assert finish(store, run_id, expect="active", attempt=1).ok
    assert finish(store, "no-such-run").state == "missing"


def test_a_cancel_accepted_before_the_finish_wins_it(parts):
    """The API answered 202 to a cancel of a running run whose handler then returned before the
    notice reached it: a finish with `cancel_wins` writes nothing and hands back the reason."""
    store, events = parts
    run_id = queued(store)
    claim(store, run_id)
    assert cancel(store, run_id, "user said stop").state == "requested"
    lost = finish(store, run_id, attempt=1, cancel_wins=True)
    assert (lost.state, lost.status) == ("cancel_requested", "running")
    assert lost.run == {"cancel_reason": "user said stop"}
    assert store.get(run_id)["status"] == "running"
    assert [e.type for e in events.read(run_id)] == ["started"]
    assert finish(store, run_id, "cancelled", attempt=1).ok
    assert [e.type for e in events.read(run_id)] == ["started", "cancelled"]
    other = queued(store)  # no cancel: cancel_wins changes nothing
    claim(store, other)
    assert finish(store, other, attempt=1, cancel_wins=True).ok


# -- cancel -----------------------------------------------------------------------------------
def test_cancel_a_queued_run_ends_it_at_once(parts):
    store, events = parts
    run_id = queued(store)
    outcome = cancel(store, run_id, "not needed")
    assert (outcome.state, outcome.status) == ("cancelled", "queued")
    run = store.get(run_id)
    assert run["status"] == "cancelled" and run["cancel_requested"] is True
    assert run["finished_at"] is not None
    [event] = events.read(run_id)
    assert (event.seq, event.type, event.data) == (1, "cancelled", {"reason": "not needed"})
    assert claim(store, run_id).state == "status"  # its handler never runs


def test_cancel_a_running_run_tells_its_process(store):
    told: list[tuple[str, str | None]] = []
    arrived = threading.Event()

    def deliver(run_id, reason):
        told.append((run_id, reason))
        arrived.set()

    listener = store.listen_cancels(deliver)
    try:
        run_id = queued(store)
        claim(store, run_id)
        outcome = cancel(store, run_id, "enough")
        assert (outcome.state, outcome.status) == ("requested", "running")
        assert arrived.wait(WAIT_S)
        assert told == [(run_id, "enough")]
        run = store.get(run_id)
        assert run["status"] == "running" and run["cancel_requested"] is True
        assert run["cancel_reason"] == "enough"
        assert finish(store, run_id, "cancelled").ok
        assert store.get(run_id)["status"] == "cancelled"
    finally:
        if listener is not None:
            listener.stop()
    assert cancel(store, "no-such-run").state == "missing"


# -- idempotency ------------------------------------------------------------------------------
def test_idempotency_key_is_held_by_the_first_run(store):
    key = uuid.uuid4().hex
    assert store.claim_idempotency(key, "run-a", "hash-a") is None
    assert store.claim_idempotency(key, "run-b", "hash-b") == ("run-a", "hash-a")
    store.release_idempotency(key)
    assert store.claim_idempotency(key, "run-c", "hash-c") is None


# -- batches ----------------------------------------------------------------------------------
def test_a_batch_is_stored_with_its_runs_in_order(store):
    batch_id = uuid.uuid4().hex
    records = [record(batch_id=batch_id) for _ in range(3)]
    run_ids = [r["run_id"].strip('"') for r in records]
    store.create(records, {"batch_id": batch_id, "total": 3, "created_at": utc_now_iso(),
                           "metadata": {"b": 1}})
    batch = store.batch(batch_id)
    assert batch["batch_id"] == batch_id and batch["total"] == 3 and batch["metadata"] == {"b": 1}
    assert store.batch_run_ids(batch_id) == run_ids
    assert [store.get(r)["batch_id"] for r in run_ids] == [batch_id] * 3
    cancel(store, run_ids[1])
    assert store.statuses(run_ids) == ["queued", "cancelled", "queued"]
    assert store.batch("no-such-batch") is None and store.batch_run_ids("no-such-batch") == []


# -- list -------------------------------------------------------------------------------------
def test_list_newest_first_with_a_cursor(store):
    run_ids = []
    for _ in range(5):
        run_ids.append(queued(store))
        time.sleep(0.002)  # distinct creation times
    newest = list(reversed(run_ids))
    first = store.list_ids(None, 2)
    assert [r for r, _ in first] == newest[:2]
    second = store.list_ids((first[-1][1], first[-1][0]), 2)
    assert [r for r, _ in second] == newest[2:4]
    third = store.list_ids((second[-1][1], second[-1][0]), 1)
    assert [r for r, _ in third] == newest[4:5]
    assert all(isinstance(score, float) for _, score in first + second + third)


# -- wait -------------------------------------------------------------------------------------
def test_wait_returns_the_run_once_terminal(store):
    run_id = queued(store)
    claim(store, run_id)
    threading.Timer(0.3, finish, (store, run_id)).start()
    began = time.monotonic()
    run = store.wait(run_id, WAIT_S)
    assert run["status"] == "succeeded" and run["output"] == {"ok": True}
    assert time.monotonic() - began < WAIT_S / 2
    assert "stream_token" not in run and "deadline" not in run  # the public fields


def test_wait_gives_the_run_as_it_is_when_the_timeout_passes(store):
    run_id = queued(store)
    began = time.monotonic()
    run = store.wait(run_id, 0.3)
    assert run["status"] == "queued" and run["status"] not in TERMINAL
    assert 0.25 <= time.monotonic() - began < WAIT_S
    with pytest.raises(RunNotFound):
        store.wait("no-such-run", 0.1)


def test_redis_create_lands_with_what_then_adds_or_not_at_all(redis_url):
    """RedisRunStore.create(then=...): the caller's commands (a run's broker message) join the
    runs' MULTI; when `then` raises, nothing is stored."""
    store = RedisRunStore(redis.Redis.from_url(redis_url), ttl_s=TTL_S, max_events=1000)
    extra = f"then-test-{uuid.uuid4().hex}"
    kept = record()
    store.create([kept], then=lambda pipe: pipe.set(extra, "1"))
    assert store.get(kept["run_id"].strip('"')) is not None
    assert store.client.get(extra) == b"1"

    lost = record()

    def fails(pipe):
        pipe.set(extra + "-never", "1")
        raise RuntimeError("the broker message could not be built")

    with pytest.raises(RuntimeError):
        store.create([lost], then=fails)
    assert store.get(lost["run_id"].strip('"')) is None
    assert not store.client.exists(extra + "-never")
    store.client.delete(extra)


def test_a_wait_is_subscribed_before_it_reads_the_run_again(redis_url):
    """redis-py's subscribe() only sends the command: the wait takes Redis' confirmation before
    its second read, so an end published after that read is heard, not found a second later.
    Replies left by an earlier wait on the same connection are skipped."""
    from tasks.redis_store import _confirmed

    client = redis.Redis.from_url(redis_url)
    pubsub = client.pubsub()
    try:
        pubsub.subscribe("earlier-wait")
        pubsub.unsubscribe("earlier-wait")  # its two replies are still unread
        pubsub.subscribe("this-wait")
        _confirmed(pubsub, b"this-wait")
        assert client.pubsub_numsub("this-wait") == [(b"this-wait", 1)]
        assert client.publish("this-wait", "end") == 1
        message = pubsub.get_message(timeout=2)
        assert message is not None and message["type"] == "message" and message["data"] == b"end"
    finally:
        pubsub.close()
        client.close()
