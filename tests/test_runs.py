"""Agent runs as Celery tasks (issue 3): demo agents, event-log invariants, filters, outcomes,
timeouts, submit validation, idempotency, batches and listing, against a real redis-server and
real Celery prefork workers.

Cancellation is in test_runs_cancel.py, lost workers in test_runs_lost.py, Flower in
test_flower.py.
"""

from __future__ import annotations

import threading
import uuid

import pytest
import redis

from streaming.constants import BATCH_KEY, RUNS_INDEX_KEY
from tasks.celeryapp import runtime, settings
from tasks.service import submit_run
from tests.log_check import check_log
from tests.runs_support import (
    eventually,
    extra_worker_fixture,
    finish,
    read_events,
    types,
)

pytestmark = pytest.mark.usefixtures("worker")

extra_worker = extra_worker_fixture("xruns")

DEMO_AGENTS = ["echo", "countdown", "tokens", "async_tokens", "fail", "sleep", "block", "custom",
               "chatty"]


# -- agents are Celery tasks -----------------------------------------------------------------------

def test_each_demo_agent_is_its_own_celery_task(runcast, worker):
    runcast.load_agents()
    for name in DEMO_AGENTS:
        assert runcast.get_agent(name) is not None, name
        task = runcast.app.tasks[f"runcast.agent.{name}"]
        assert task.name == f"runcast.agent.{name}"
        # the worker registered the same task names
        assert f"runcast.agent.{name}" in worker.output()
    conf = runcast.app.conf
    assert conf.task_serializer == "json" and conf.accept_content == ["json"]
    assert conf.task_acks_late is True
    assert conf.worker_send_task_events is True and conf.task_send_sent_event is True


# -- the demo agents, as DESIGN.md's table says --------------------------------------------------

def test_echo_returns_its_input(runcast):
    payload = {"a": [1, "x", None, True], "b": {"c": 1.5}, "unicode": "h\u00e9llo \u2603"}
    run, events = finish(runcast, runcast.submit("echo", payload))
    assert run["status"] == "succeeded"
    assert run["output"] == {"echo": payload}
    assert run["input"] == payload
    assert types(events) == ["started", "complete"]
    assert events[0].data["agent"] == "echo" and events[0].data["attempt"] == 1

    # any JSON input, not only objects
    run, _ = finish(runcast, runcast.submit("echo", [1, 2, "three"]))
    assert run["output"] == {"echo": [1, 2, "three"]}


def test_countdown_emits_one_progress_per_step(runcast):
    run, events = finish(runcast, runcast.submit("countdown", {"steps": 3, "delay": 0.01}))
    assert run["status"] == "succeeded" and run["output"] == {"steps": 3}
    assert types(events) == ["started", "progress", "progress", "progress", "complete"]
    for i, event in enumerate(events[1:4], start=1):
        assert event.data["step"] == f"{i}/3"
        assert event.data["progress"] == pytest.approx(i / 3)
        assert isinstance(event.data["message"], str) and event.data["message"]
    # the run record follows the latest progress
    assert run["progress"] == events[3].data

    run, events = finish(runcast, runcast.submit("countdown", {}))  # defaults: 5 steps
    assert run["output"] == {"steps": 5}
    assert types(events).count("progress") == 5
    assert events[-2].data["progress"] == pytest.approx(1.0)


@pytest.mark.parametrize("agent", ["tokens", "async_tokens"])
def test_tokens_one_token_per_word(runcast, agent):
    text = "the quick brown fox"
    run, events = finish(runcast, runcast.submit(agent, {"text": text}))
    assert run["status"] == "succeeded" and run["output"] == {"text": text}
    tokens = [e for e in events if e.type == "token"]
    assert types(events) == ["started"] + ["token"] * 4 + ["complete"]
    assert [t.data["content"] for t in tokens] == ["the ", "quick ", "brown ", "fox "]
    assert [t.data["finish_reason"] for t in tokens] == [None, None, None, "stop"]

    run, events = finish(runcast, runcast.submit(agent, {"text": "a b", "delay": 0.01}))
    assert [e.data["content"] for e in events if e.type == "token"] == ["a ", "b "]


def test_fail_is_agent_error_with_the_exception_type(runcast, worker):
    run, events = finish(runcast, runcast.submit("fail", {"message": "boom on purpose"}))
    assert run["status"] == "failed"
    assert run["error"] == {"error": "boom on purpose", "code": "agent_error",
                            "details": {"type": "ValueError"}}
    assert types(events) == ["started", "error"]
    # the traceback goes to the worker log, not to callers
    assert "Traceback" not in str(run["error"])
    eventually(lambda: "ValueError: boom on purpose" in worker.output(), timeout=10,
               what="the traceback in the worker log")


def test_sleep_heartbeats_each_second(runcast):
    run, events = finish(runcast, runcast.submit("sleep", {"seconds": 1.5}))
    assert run["status"] == "succeeded" and run["output"] == {"slept": 1.5}
    assert types(events) == ["started", "heartbeat", "complete"]
    assert events[1].data == {}


def test_block_emits_nothing(runcast):
    run, events = finish(runcast, runcast.submit("block", {"seconds": 0.2}))
    assert run["status"] == "succeeded" and run["output"] == {"blocked": 0.2}
    assert types(events) == ["started", "complete"]


def test_custom_events(runcast):
    run, events = finish(runcast, runcast.submit("custom", {"document_id": "doc-7"}))
    assert run["status"] == "succeeded" and run["output"] == {"answer": "done"}
    assert types(events) == ["started", "custom:analysis_started", "custom:analysis_complete",
                             "complete"]
    assert events[1].data["document_id"] == "doc-7"
    assert events[2].data["document_id"] == "doc-7"


def test_chatty_emits_n_tokens_in_order(runcast):
    n = 2000
    run, events = finish(runcast, runcast.submit("chatty", {"n": n}))
    assert run["status"] == "succeeded" and run["output"] == {"n": n}
    assert len(events) == n + 2
    assert [e.data["content"] for e in events[1:-1]] == [f"t{i} " for i in range(n)]


def test_bad_demo_input_is_an_agent_error(runcast):
    run, _ = finish(runcast, runcast.submit("countdown", {"steps": "many"}))
    assert run["status"] == "failed" and run["error"]["code"] == "agent_error"
    assert run["error"]["details"]["type"] == "ValueError"


# -- filters -----------------------------------------------------------------------------------

def test_minimal_filter_keeps_only_started_and_terminal(runcast):
    run, events = finish(runcast, runcast.submit("countdown", {"steps": 4, "delay": 0},
                                                 events="minimal"))
    assert run["status"] == "succeeded"
    assert [(e.seq, e.type) for e in events] == [(1, "started"), (2, "complete")]
    assert run["last_seq"] == 2
    run, events = finish(runcast, runcast.submit("fail", {}, events="minimal"))
    assert types(events) == ["started", "error"]


def test_filtered_events_take_no_seq(runcast):
    run, events = finish(runcast, runcast.submit("custom", {"document_id": "d"},
                                                 events=["custom:analysis_complete"]))
    assert [(e.seq, e.type) for e in events] == [
        (1, "started"), (2, "custom:analysis_complete"), (3, "complete")]
    assert run["last_seq"] == 3

    run, events = finish(runcast, runcast.submit("tokens", {"text": "a b c"},
                                                 events=["progress"]))
    assert [(e.seq, e.type) for e in events] == [(1, "started"), (2, "complete")]
    assert run["output"] == {"text": "a b c"}

    _, events = finish(runcast, runcast.submit("custom", {"document_id": "d"}, events="chat"))
    assert types(events) == ["started", "complete"]  # chat has no custom events

    _, events = finish(runcast, runcast.submit("custom", {"document_id": "d"},
                                               events=["custom"]))
    assert types(events)[1:3] == ["custom:analysis_started", "custom:analysis_complete"]


def test_the_agents_registered_filter_is_the_default(runcast, extra_worker):
    run, events = finish(runcast, runcast.submit("t_quiet", {}))
    assert run["status"] == "succeeded"
    assert types(events) == ["started", "complete"]
    run, events = finish(runcast, runcast.submit("t_quiet", {}, events="all"))
    assert types(events) == ["started", "progress", "token", "complete"]


# -- outcomes ------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["set", "nan", "object"])
def test_a_non_json_result_is_invalid_output(runcast, extra_worker, kind):
    run, events = finish(runcast, runcast.submit("t_not_json", {"kind": kind}))
    assert run["status"] == "failed"
    assert run["error"]["code"] == "invalid_output"
    assert run["output"] is None
    assert types(events) == ["started", "error"]


def test_request_timeout_smaller_than_default(runcast):
    run, events = finish(runcast, runcast.submit("sleep", {"seconds": 60}, timeout=1))
    assert run["status"] == "failed"
    assert run["error"]["code"] == "timeout"
    assert run["error"]["details"]["timeout"] == 1
    assert events[-1].type == "error" and events[-1].data["code"] == "timeout"


def test_agent_timeout_vs_request_timeout_smaller_wins(runcast, extra_worker):
    # the agent says 1 s, the request 30 s: 1 s
    run, _ = finish(runcast, runcast.submit("t_limited", {"seconds": 60}, timeout=30))
    assert run["status"] == "failed" and run["error"]["code"] == "timeout"
    assert run["error"]["details"]["timeout"] == 1
    # the request says less than the agent
    run, _ = finish(runcast, runcast.submit("t_limited", {"seconds": 60}, timeout=0.5))
    assert run["status"] == "failed" and run["error"]["code"] == "timeout"
    assert run["error"]["details"]["timeout"] == 0.5
    # within its timeout it succeeds
    run, _ = finish(runcast, runcast.submit("t_limited", {"seconds": 0.1}))
    assert run["status"] == "succeeded"


def test_timeout_of_a_handler_that_ignores_it_is_still_a_timeout(runcast):
    # `block` never looks: it is stopped hard after the grace period, and fails with `timeout`
    run, events = finish(runcast, runcast.submit("block", {"seconds": 60}, timeout=1))
    assert run["status"] == "failed" and run["error"]["code"] == "timeout"
    assert types(events) == ["started", "error"]
    # and the worker still serves
    run, _ = finish(runcast, runcast.submit("echo", {"after": "timeout"}))
    assert run["status"] == "succeeded"


# -- log invariants under load -------------------------------------------------------------------

def test_the_terminal_event_is_logged_before_the_status_shows_terminal(runcast):
    """Poll the record while runs end: whenever it shows terminal, the log already ends."""
    run_ids = [runcast.submit("chatty", {"n": 300}) for _ in range(6)]
    run_ids += [runcast.submit("fail", {}) for _ in range(3)]
    pending = set(run_ids)
    while pending:
        for run_id in list(pending):
            run = runcast.get_run(run_id)
            if run["status"] in ("succeeded", "failed", "cancelled"):
                events = read_events(run_id)
                assert events and events[-1].is_terminal, (run_id, run["status"])
                pending.discard(run_id)
    for run_id in run_ids:
        finish(runcast, run_id)


def test_concurrent_runs_keep_their_events_apart(runcast):
    texts = {f"w{i}": " ".join(f"r{i}x{j}" for j in range(40)) for i in range(8)}
    ids = {}
    for key, text in texts.items():
        agent = "tokens" if int(key[1:]) % 2 else "async_tokens"
        ids[key] = runcast.submit(agent, {"text": text, "delay": 0.002})
    chatty = [runcast.submit("chatty", {"n": 500}) for _ in range(4)]
    for key, run_id in ids.items():
        run, events = finish(runcast, run_id)
        assert run["status"] == "succeeded"
        got = "".join(e.data["content"] for e in events if e.type == "token")
        assert got == texts[key] + " "
    for run_id in chatty:
        _, events = finish(runcast, run_id)
        assert [e.data["content"] for e in events[1:-1]] == [f"t{i} " for i in range(500)]


# -- submit: validation and idempotency ----------------------------------------------------------

def _stored(redis_url: str) -> tuple[int, int]:
    client = redis.Redis.from_url(redis_url)
    try:
        batches = sum(1 for _ in client.scan_iter(BATCH_KEY.format(batch_id="*"), count=1000))
        return client.zcard(RUNS_INDEX_KEY), batches
    finally:
        client.close()


def test_submit_validation_rejects_and_stores_nothing(runcast, redis_url):
    before = _stored(redis_url)
    with pytest.raises(runcast.UnknownAgent):
        runcast.submit("no-such-agent", {})
    with pytest.raises(runcast.InvalidRequest):
        runcast.submit("echo", {}, events=["no-such-event"])
    with pytest.raises(runcast.InvalidRequest):
        runcast.submit("echo", {}, events="custom:bad name!")
    for bad in (float("nan"), float("inf"), float("-inf")):
        with pytest.raises(runcast.InvalidRequest):
            runcast.submit("echo", {"x": bad})
    with pytest.raises(runcast.InvalidRequest):
        runcast.submit("echo", {}, timeout=-1)
    with pytest.raises(runcast.InvalidRequest):
        runcast.submit("echo", {}, metadata=["not", "an", "object"])
    limit = settings().max_input_bytes
    with pytest.raises(runcast.InputTooLarge):
        runcast.submit("echo", {"blob": "a" * limit})
    assert issubclass(runcast.InputTooLarge, runcast.InvalidRequest)
    assert _stored(redis_url) == before
    # just under the limit is fine
    run_id = runcast.submit("echo", {"blob": "a" * (limit - 100)})
    run, _ = finish(runcast, run_id)
    assert run["status"] == "succeeded" and len(run["output"]["echo"]["blob"]) == limit - 100


def test_run_ids_are_random_and_unknown_ids_are_not_found(runcast):
    ids = {runcast.submit("echo", {}) for _ in range(5)}
    assert len(ids) == 5
    for run_id in ids:
        assert len(run_id) >= 32
        finish(runcast, run_id)
    assert runcast.get_run(uuid.uuid4().hex) is None
    with pytest.raises(runcast.RunNotFound):
        runcast.wait(uuid.uuid4().hex, timeout=1)


def test_idempotency_key(runcast):
    key = f"idem-{uuid.uuid4().hex}"
    first = runcast.submit("echo", {"n": 1}, idempotency_key=key)
    again, new = submit_run(runtime(), "echo", {"n": 1}, idempotency_key=key)
    assert again == first and new is False
    assert runcast.submit("echo", {"n": 1}, idempotency_key=key) == first
    with pytest.raises(runcast.RunConflict):
        runcast.submit("echo", {"n": 2}, idempotency_key=key)
    with pytest.raises(runcast.RunConflict):
        runcast.submit("echo", {"n": 1}, idempotency_key=key, timeout=5)
    run, events = finish(runcast, first)
    assert run["output"] == {"echo": {"n": 1}}
    assert types(events).count("started") == 1  # one run, executed once
    # a different key is a different run
    assert runcast.submit("echo", {"n": 1}, idempotency_key=key + "-b") != first


def test_idempotent_submits_racing_get_one_run(runcast):
    key = f"idem-race-{uuid.uuid4().hex}"
    results: list[str] = []
    barrier = threading.Barrier(8)

    def go():
        barrier.wait()
        results.append(runcast.submit("echo", {"race": True}, idempotency_key=key))

    threads = [threading.Thread(target=go) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(results) == 8 and len(set(results)) == 1
    _, events = finish(runcast, results[0])
    assert types(events) == ["started", "complete"]


# -- batches ---------------------------------------------------------------------------------------

def test_batch_is_all_or_nothing(runcast, redis_url):
    before = _stored(redis_url)
    good = {"agent": "echo", "input": {"i": 1}}
    with pytest.raises(runcast.UnknownAgent):
        runcast.submit_batch([good, good, {"agent": "nope", "input": {}}])
    with pytest.raises(runcast.InvalidRequest):
        runcast.submit_batch([good, {"agent": "echo", "input": {"x": float("nan")}}, good])
    with pytest.raises(runcast.InvalidRequest):
        runcast.submit_batch([good, {"agent": "echo", "input": {}, "events": ["bogus"]}])
    with pytest.raises(runcast.InputTooLarge):
        runcast.submit_batch([good, {"agent": "echo", "input": {"b": "a" * 1_100_000}}])
    with pytest.raises(runcast.InvalidRequest):
        runcast.submit_batch([])
    assert _stored(redis_url) == before


def test_batch_runs_and_status(runcast):
    runs = [{"agent": "echo", "input": {"i": i}} for i in range(6)]
    runs += [{"agent": "fail", "input": {"message": "no"}} for _ in range(2)]
    runs += [{"agent": "countdown", "input": {"steps": 2, "delay": 0}, "events": "minimal"}]
    batch = runcast.submit_batch(runs, metadata={"purpose": "test"})
    assert batch["total"] == 9 and len(batch["run_ids"]) == 9
    assert len(set(batch["run_ids"])) == 9
    for i, run_id in enumerate(batch["run_ids"]):
        run, events = finish(runcast, run_id)
        assert run["batch_id"] == batch["batch_id"]
        assert run["agent"] == runs[i]["agent"]
        if run["agent"] == "echo":
            assert run["output"] == {"echo": {"i": i}}
        if run["agent"] == "countdown":
            assert types(events) == ["started", "complete"]
    status = runcast.batch_status(batch["batch_id"])
    assert status.pop("created_at") and status.pop("finished_at")
    assert status == {"batch_id": batch["batch_id"], "total": 9,
                      "counts": {"succeeded": 7, "failed": 2}, "done": True}
    with pytest.raises(runcast.RunNotFound):
        runcast.batch_status(uuid.uuid4().hex)


def test_batch_not_done_until_its_runs_end_and_cancel_batch(runcast, extra_worker):
    runs = [{"agent": "echo", "input": {}}] + [{"agent": "t_idle", "input": {}}] * 3
    batch = runcast.submit_batch(runs)
    finish(runcast, batch["run_ids"][0])
    status = runcast.batch_status(batch["batch_id"])
    assert status["counts"] == {"succeeded": 1, "queued": 3} and status["done"] is False
    status = runcast.cancel_batch(batch["batch_id"], reason="enough")
    assert status["counts"] == {"succeeded": 1, "cancelled": 3} and status["done"] is True
    for run_id in batch["run_ids"][1:]:
        _, events = finish(runcast, run_id, started=False)
        assert types(events) == ["cancelled"] and events[0].data == {"reason": "enough"}
    # the finished run was left alone
    assert runcast.get_run(batch["run_ids"][0])["status"] == "succeeded"
    with pytest.raises(runcast.RunNotFound):
        runcast.cancel_batch(uuid.uuid4().hex)


# -- listing -------------------------------------------------------------------------------------

def test_list_runs_newest_first_with_filters_and_cursor(runcast):
    tag = f"list-{uuid.uuid4().hex}"  # runs carry it as their batch id, to list only ours
    ids = [runcast.submit("echo", {"i": i}, batch_id=tag) for i in range(5)]
    failed = runcast.submit("fail", {}, batch_id=tag)
    for run_id in [*ids, failed]:
        finish(runcast, run_id)
    newest_first = [failed, *reversed(ids)]

    page = runcast.list_runs(batch_id=tag)
    assert [r["run_id"] for r in page["runs"]] == newest_first
    assert page["next_cursor"] is None
    assert all(r["batch_id"] == tag for r in page["runs"])
    created = [r["created_at"] for r in page["runs"]]
    assert created == sorted(created, reverse=True)

    seen, cursor = [], None
    for _ in range(10):
        page = runcast.list_runs(batch_id=tag, limit=2, cursor=cursor)
        assert len(page["runs"]) <= 2
        seen += [r["run_id"] for r in page["runs"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == newest_first

    page = runcast.list_runs(batch_id=tag, status="failed")
    assert [r["run_id"] for r in page["runs"]] == [failed]
    page = runcast.list_runs(batch_id=tag, agent="echo", limit=3)
    assert [r["run_id"] for r in page["runs"]] == newest_first[1:4]
    assert page["next_cursor"] is not None
    page = runcast.list_runs(batch_id=tag, agent="echo", limit=3, cursor=page["next_cursor"])
    assert [r["run_id"] for r in page["runs"]] == newest_first[4:]
    assert runcast.list_runs(batch_id=tag, status="cancelled")["runs"] == []
    assert runcast.list_runs(agent="fail", limit=1)["runs"][0]["agent"] == "fail"

    with pytest.raises(runcast.InvalidRequest):
        runcast.list_runs(status="exploded")
    with pytest.raises(runcast.InvalidRequest):
        runcast.list_runs(cursor="not-a-cursor")


def test_wait_with_a_timeout_returns_the_run_as_it_is(runcast, extra_worker):
    run_id = runcast.submit("t_idle", {})
    run = runcast.wait(run_id, timeout=0.5)
    assert run["status"] == "queued" and run["finished_at"] is None
    runcast.cancel(run_id)
    check_log(runcast.get_run(run_id), read_events(run_id), started=False)
