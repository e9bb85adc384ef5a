"""No event lost in silence, no gap, the terminal event last: a run's log when the event store
fails it (a long outage, a refusal) and when an emit fails.

Each test starts its own redis-server (so it may stop it and change its configuration), with an
outage limit of a fraction of a second instead of a minute.
"""

import shutil
import threading
import time
import types
import uuid

import pytest

from streaming import EventStoreUnavailable, QueueBackend, RedisEventBackend, StreamContext
from streaming.constants import EVENTS_KEY, RUN_KEY
from streaming.events import utc_now_iso
from tests.redis_server import free_port
from tests.runs_support import eventually

WAIT_S = 20  # generous bound on anything that should take well under a second
LIMIT_S = 0.5  # the outage limit of these tests

pytestmark = pytest.mark.skipif(shutil.which("redis-server") is None, reason="no redis-server")


def contents(events) -> list:
    return [e.data.get("content") for e in events]


def seqs(events) -> list[int]:
    return [e.seq for e in events]


# -- a failed emit ---------------------------------------------------------------------------
def test_an_emit_that_fails_on_a_full_buffer_takes_no_seq(persistent_server, run_id):
    backend = RedisEventBackend(persistent_server.url, buffer_events=2, outage_limit_s=LIMIT_S)
    offered = QueueBackend()
    try:
        ctx = StreamContext(run_id, backend=backend, streaming_backend=offered)
        ctx.sync_emit_token("1")
        ctx.flush(timeout=WAIT_S)
        persistent_server.stop()
        ctx.sync_emit_token("2")
        ctx.sync_emit_token("3")
        with pytest.raises(EventStoreUnavailable):  # the buffer is full, the outage too long
            ctx.sync_emit_token("lost")
        assert ctx.last_seq == 3
        persistent_server.start()
        eventually(lambda: len(backend.read(run_id)) == 3)  # the held events landed
        assert ctx.sync_emit_token("4").seq == 4  # the agent caught it and went on
        ctx.flush(timeout=WAIT_S)
        events = backend.read(run_id)
        assert seqs(events) == [1, 2, 3, 4]
        assert contents(events) == ["1", "2", "3", "4"]
        assert seqs(offered.events) == [1, 2, 3, 4]  # nor was it offered with a seq
    finally:
        backend.close()


# -- refusals ----------------------------------------------------------------------------------
def test_an_oom_refusal_holds_the_events_like_an_outage(server, admin, run_id):
    backend = RedisEventBackend(server.url, outage_limit_s=LIMIT_S)
    try:
        ctx = StreamContext(run_id, backend=backend)
        ctx.sync_emit_token("t0")
        ctx.flush(timeout=WAIT_S)
        admin.config_set("maxmemory", 1)  # every write refused: OOM
        for i in range(1, 50):
            ctx.sync_emit_token(f"t{i}")
        with pytest.raises(TimeoutError):
            ctx.flush(timeout=LIMIT_S / 3)  # not written, so not reported written
        with pytest.raises(EventStoreUnavailable, match="OOM"):
            ctx.flush(timeout=WAIT_S)  # past the outage limit: the run is failed
        assert seqs(backend.read(run_id)) == [1]
        admin.config_set("maxmemory", 0)  # the events were held: they land now
        eventually(lambda: len(backend.read(run_id)) == 50)
        ctx.flush(timeout=WAIT_S)
        assert contents(backend.read(run_id)) == [f"t{i}" for i in range(50)]
    finally:
        backend.close()


def test_a_readonly_refusal_after_a_failover_is_an_outage(server, admin, run_id):
    backend = RedisEventBackend(server.url, outage_limit_s=30)
    try:
        ctx = StreamContext(run_id, backend=backend)
        ctx.sync_emit_token("t0")
        ctx.flush(timeout=WAIT_S)
        admin.replicaof("127.0.0.1", free_port())  # a replica now (of nothing): READONLY
        for i in range(1, 10):
            ctx.sync_emit_token(f"t{i}")
        with pytest.raises(TimeoutError):
            ctx.flush(timeout=0.5)
        assert seqs(backend.read(run_id)) == [1]
        admin.replicaof("NO", "ONE")  # promoted
        ctx.flush(timeout=WAIT_S)
        assert contents(backend.read(run_id)) == [f"t{i}" for i in range(10)]
    finally:
        backend.close()


def test_a_run_whose_events_are_refused_for_good_is_told(server, admin, run_id):
    """WRONGTYPE is the run's own refusal: its events are lost, and it hears so from its flush
    and its emits (which take no seq); the other runs go on."""
    backend = RedisEventBackend(server.url, outage_limit_s=30)
    other = uuid.uuid4().hex
    admin.set(EVENTS_KEY.format(run_id=run_id), "not a stream")
    try:
        ctx, other_ctx = (StreamContext(r, backend=backend, start_seq=0) for r in (run_id, other))
        for i in range(3):
            ctx.sync_emit_token(f"t{i}")
            other_ctx.sync_emit_token(f"t{i}")
        other_ctx.flush(timeout=WAIT_S)
        with pytest.raises(EventStoreUnavailable, match="WRONGTYPE"):
            ctx.flush(timeout=WAIT_S)
        with pytest.raises(EventStoreUnavailable, match="WRONGTYPE"):
            ctx.sync_emit_token("later")
        assert ctx.last_seq == 3
        other_ctx.sync_emit_token("t3")
        other_ctx.flush(timeout=WAIT_S)
        assert contents(backend.read(other)) == ["t0", "t1", "t2", "t3"]
    finally:
        backend.close()


# -- a run failed by an outage ---------------------------------------------------------------
def test_dropped_events_never_land_and_a_blocked_emit_gives_up(persistent_server, run_id):
    backend = RedisEventBackend(persistent_server.url, buffer_events=3, outage_limit_s=30)
    try:
        ctx = StreamContext(run_id, backend=backend)
        ctx.sync_emit_token("t0")
        ctx.flush(timeout=WAIT_S)
        persistent_server.stop()
        for i in range(1, 4):
            ctx.sync_emit_token(f"t{i}")  # the buffer is full now
        failed = []

        def emit_blocked():
            try:
                ctx.sync_emit_token("blocked")
            except EventStoreUnavailable as exc:
                failed.append(exc)

        blocked = threading.Thread(target=emit_blocked, daemon=True)
        blocked.start()
        time.sleep(0.2)
        assert blocked.is_alive()
        ctx.drop_unwritten("the run is failed")
        blocked.join(5)
        assert not blocked.is_alive() and failed
        with pytest.raises(EventStoreUnavailable, match="the run is failed"):
            ctx.sync_emit_token("after")
        assert ctx.last_seq == 4
        persistent_server.start()
        later = StreamContext(uuid.uuid4().hex, backend=backend)
        later.sync_emit_token("x")
        later.flush(timeout=WAIT_S)  # the writer is past the outage, and idle
        assert contents(backend.read(run_id)) == ["t0"]
    finally:
        backend.close()


def tokens(payload, context):
    for i in range(20):
        context.sync_emit_token(f"t{i}")
        time.sleep(0.1)
    return {"ok": True}


def drained(backend) -> bool:
    try:
        backend.flush(timeout=0.1)
    except (EventStoreUnavailable, TimeoutError):
        return False
    return True


def test_a_run_failed_by_an_outage_ends_with_its_terminal_event(persistent_server, monkeypatch):
    """The handler emits through an outage longer than the limit: the run fails with
    `event_store_unavailable` once Redis is back, its log gap-free and that event last, even
    when the run's finish reaches Redis before the writer retries (its pauses made longer)."""
    from streaming.backends import writer
    from tasks.execute import execute_run
    from tasks.registry import AgentSpec
    from tasks.runtime import Runtime
    from tasks.settings import Settings
    from tasks.store import new_record

    monkeypatch.setattr(writer, "RETRY_BACKOFF_MAX_S", 3.0)
    rt = Runtime(Settings(redis_url=persistent_server.url, cancel_grace=1))
    rt.events.close()
    rt.events = RedisEventBackend(persistent_server.url, ttl_s=rt.settings.run_ttl,
                                  outage_limit_s=1.0, progress_key=RUN_KEY)
    spec = AgentSpec("event_loss_tokens", tokens, context_param="context")
    run_id = uuid.uuid4().hex
    rt.store.create([new_record(
        run_id, spec.name, "{}", events="all", timeout=60, metadata={}, batch_id=None,
        idempotency_key=None, request_hash="", created_at=utc_now_iso(),
    )])
    task = types.SimpleNamespace(request=types.SimpleNamespace(hostname="test"))
    out = {}
    worker = threading.Thread(target=lambda: out.update(result=execute_run(rt, spec, task,
                                                                           run_id, 1)))
    try:
        worker.start()
        time.sleep(0.55)  # a few tokens written
        persistent_server.stop()
        time.sleep(3.0)  # the handler ends, its flush fails past the limit
        persistent_server.start()
        worker.join(WAIT_S)
        assert not worker.is_alive()
        assert out["result"]["status"] == "failed"
        assert out["result"]["error"]["code"] == "event_store_unavailable"
        eventually(lambda: drained(rt.events))  # nothing of the run is left to land later
        events = rt.events.read(run_id)
        assert seqs(events) == list(range(1, len(events) + 1))
        assert [e.is_terminal for e in events].count(True) == 1
        assert events[-1].type == "error"
        assert events[-1].data["code"] == "event_store_unavailable"
        assert rt.store.get(run_id)["status"] == "failed"
    finally:
        worker.join(WAIT_S)
        rt.close()
