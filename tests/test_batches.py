"""Batches at scale over real HTTP, a real worker and Redis: POST /batches stores the runs and the
workers dispatch them; GET /batches/{id}/stream, /results (JSON pages, NDJSON), cancel during
dispatch; the client's batch_stream and batch_results."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from api.client import AsyncClient, BatchFrame, BatchResult, Client
from streaming.constants import (
    BATCH_DISPATCH_AHEAD,
    BATCH_DISPATCH_CHUNK,
    BATCH_DISPATCH_PAUSE_S,
    BATCH_DISPATCH_STALE_S,
    BATCH_KEY,
)
from tests.api_helpers import get_run, marker
from tests.batch_support import (
    Subscriber,
    assert_error,
    check_batch_frames,
    ndjson,
    read_batch_stream,
)
from tests.runs_support import eventually

ACCEPT_BOUND_S = 15.0  # generous: the machine is shared; the benchmark measures the real figure


def post_batch(http: httpx.Client, runs: list[dict], **body) -> dict:
    response = http.post("/batches", json={"runs": runs, **body})
    assert response.status_code == 202, response.text
    created = response.json()
    assert set(created) == {"batch_id", "run_ids", "total"}
    assert created["total"] == len(runs) == len(set(created["run_ids"]))
    return created


def test_batch_stream_results_and_status_follow_the_contract(http, api_url):
    runs = [{"agent": "echo", "input": {"i": 0}}, {"agent": "fail", "input": {"message": "no"}},
            {"agent": "countdown", "input": {"steps": 2, "delay": 0.01}},
            {"agent": "echo", "input": {"i": 3}}, {"agent": "echo", "input": {"i": 4}}]
    created = post_batch(http, runs)
    batch_id, run_ids = created["batch_id"], created["run_ids"]

    frames = read_batch_stream(api_url, batch_id)
    statuses = check_batch_frames(frames, batch_id, run_ids)
    assert all(seen == ["running", "succeeded" if i != 1 else "failed"]
               for i, seen in enumerate(statuses[r] for r in run_ids)), statuses
    assert frames[-1].data["counts"] == {"succeeded": 4, "failed": 1}

    status = http.get(f"/batches/{batch_id}").json()
    runs_now = [get_run(http, run_id) for run_id in run_ids]
    assert status["done"] is True and status["counts"] == {"succeeded": 4, "failed": 1}
    assert status["created_at"] == runs_now[0]["created_at"]
    assert status["finished_at"] == max(run["finished_at"] for run in runs_now)

    # JSON pages in submit order: `after` is an index + 1
    first = http.get(f"/batches/{batch_id}/results", params={"limit": 3}).json()
    assert [r["index"] for r in first["results"]] == [0, 1, 2]
    assert first["next_after"] == 3 and first["done"] is False
    rest = http.get(f"/batches/{batch_id}/results",
                    params={"after": first["next_after"], "limit": 3}).json()
    assert [r["index"] for r in rest["results"]] == [3, 4]
    assert rest["next_after"] == 5 and rest["done"] is True
    results = first["results"] + rest["results"]
    assert [r["run_id"] for r in results] == run_ids
    for result, run in zip(results, runs_now, strict=True):
        assert set(result) == {"index", "run_id", "status", "output", "error"}
        assert (result["status"], result["output"], result["error"]) == (
            run["status"], run["output"], run["error"])
    assert results[1]["error"]["code"] == "agent_error" and results[1]["output"] is None

    # NDJSON: every result, one line each, in order
    response = http.get(f"/batches/{batch_id}/results",
                        headers={"Accept": "application/x-ndjson"})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/x-ndjson")
    assert ndjson(response.text) == results

    # a finished stream replays whole, resumes after Last-Event-ID, and ends at once past done
    assert read_batch_stream(api_url, batch_id) == frames
    assert read_batch_stream(api_url, batch_id, last_event_id=4) == frames[4:]
    assert read_batch_stream(api_url, batch_id, after=len(frames)) == []


def test_unknown_batch_and_bad_parameters(http):
    missing = marker()
    for path in ("", "/stream", "/results"):
        assert_error(http.get(f"/batches/{missing}{path}"), 404)
    assert_error(http.get(f"/batches/{missing}/results",
                          headers={"Accept": "application/x-ndjson"}), 404)
    created = post_batch(http, [{"agent": "echo", "input": {}}])
    batch_id = created["batch_id"]
    assert_error(http.get(f"/batches/{batch_id}/results", params={"after": -1}), 422)
    assert_error(http.get(f"/batches/{batch_id}/results", params={"limit": 0}), 422)
    assert_error(http.get(f"/batches/{batch_id}/stream", headers={"Last-Event-ID": "x"}), 422)


@pytest.mark.timeout(400)
def test_large_batch_is_accepted_fast_and_streamed_exactly_once(http, api_url):
    total = 1500
    runs = [{"agent": "echo", "input": {"i": i}} for i in range(total)]
    started = time.monotonic()
    created = post_batch(http, runs)
    accepted_s = time.monotonic() - started
    assert accepted_s < ACCEPT_BOUND_S, f"{total} runs took {accepted_s:.1f} s to accept"
    batch_id, run_ids = created["batch_id"], created["run_ids"]

    early = Subscriber(api_url, batch_id).start()
    eventually(lambda: len(early.frames) >= 300, timeout=120, what="300 frames")
    middle = Subscriber(api_url, batch_id).start()  # connected in the middle, from the start
    resume_at = len(early.frames)
    resumed_frames = read_batch_stream(api_url, batch_id, last_event_id=resume_at)
    frames = early.join(240)
    assert middle.join(60) == frames
    assert resumed_frames == frames[resume_at:]
    statuses = check_batch_frames(frames, batch_id, run_ids)
    assert frames[-1].data["counts"] == {"succeeded": total}
    assert all(seen == ["running", "succeeded"] for seen in statuses.values())

    lines = ndjson(http.get(f"/batches/{batch_id}/results",
                            headers={"Accept": "application/x-ndjson"}).text)
    assert [r["index"] for r in lines] == list(range(total))
    assert [r["run_id"] for r in lines] == run_ids
    assert [r["output"] for r in lines] == [{"echo": {"i": i}} for i in range(total)]


@pytest.mark.timeout(300)
def test_cancel_during_dispatch_cancels_the_rest(http, api_url, redis_client):
    total = 3000
    created = post_batch(http, [{"agent": "sleep", "input": {"seconds": 30}}] * total)
    batch_id, run_ids = created["batch_id"], created["run_ids"]
    batch_key = BATCH_KEY.format(batch_id=batch_id)
    cursor = int(eventually(lambda: int(redis_client.hget(batch_key, "dispatched") or 0),
                            timeout=60, interval=0.002, what="the dispatch to begin"))
    assert cursor < total, "the dispatch ended before the cancel: nothing left to test"
    response = http.post(f"/batches/{batch_id}/cancel")
    assert response.status_code == 202, response.text

    frames = read_batch_stream(api_url, batch_id, timeout=120)
    statuses = check_batch_frames(frames, batch_id, run_ids)
    assert frames[-1].data["counts"] == {"cancelled": total}
    ran = [run_ids.index(run_id) for run_id, seen in statuses.items() if "running" in seen]
    assert len(ran) <= 40, f"{len(ran)} runs started after their batch was cancelled"
    # the dispatch stopped: at most the chunk being claimed meanwhile went out after the cursor
    assert all(index < cursor + BATCH_DISPATCH_CHUNK for index in ran), (cursor, sorted(ran))
    assert int(redis_client.hget(batch_key, "dispatched")) == total
    status = http.get(f"/batches/{batch_id}").json()
    assert status["done"] is True and status["counts"] == {"cancelled": total}
    assert status["finished_at"] is not None


def test_client_batch_stream_and_results(api_url):
    with Client(api_url) as client:
        created = client.submit_batch([{"agent": "echo", "input": {"i": i}} for i in range(20)])
        with client.batch_stream(created.batch_id) as stream:
            frames = list(stream)
        assert all(isinstance(f, BatchFrame) for f in frames)
        assert [f.seq for f in frames] == list(range(1, 42)) and frames[-1].event == "done"
        assert frames[-1].data["counts"] == {"succeeded": 20}
        results = list(client.batch_results(created.batch_id, limit=7))  # three pages
        assert all(isinstance(r, BatchResult) for r in results)
        assert [r.index for r in results] == list(range(20))
        assert [r.output for r in results] == [{"echo": {"i": i}} for i in range(20)]

    async def follow() -> tuple[list, list]:
        async with AsyncClient(api_url) as aclient:
            later = [f async for f in aclient.batch_stream(created.batch_id, after=30)]
            got = [r async for r in aclient.batch_results(created.batch_id, limit=6)]
            return later, got

    later, got = asyncio.run(follow())
    assert [f.seq for f in later] == list(range(31, 42))
    assert [(f.event, f.data) for f in later] == [(f.event, f.data) for f in frames[30:]]
    assert [r.run_id for r in got] == created.run_ids


def test_a_batch_whose_dispatch_message_was_lost_is_resumed(runcast, worker, monkeypatch):
    """The reaper's safety net: a batch whose dispatch made no progress gets a new dispatch
    task (here its first one never reaches the broker)."""
    from tasks import dispatch
    from tasks.celeryapp import runtime

    with monkeypatch.context() as patch:
        patch.setattr(dispatch, "_send", lambda rt, batch_id, queue: None)  # lost on its way
        batch = runcast.submit_batch([{"agent": "echo", "input": {"i": i}} for i in range(30)])
    time.sleep(1.0)
    assert runcast.batch_status(batch["batch_id"])["counts"] == {"queued": 30}
    rt = runtime()
    assert batch["batch_id"] not in dispatch.resume_stalled(rt, time.time())  # not stale yet
    later = time.time() + BATCH_DISPATCH_STALE_S + 1
    assert batch["batch_id"] in dispatch.resume_stalled(rt, later)
    status = eventually(lambda: (s := runcast.batch_status(batch["batch_id"]))["done"] and s,
                        timeout=60, what="the resumed batch to finish")
    assert status["counts"] == {"succeeded": 30}


@pytest.mark.timeout(300)
def test_dispatch_pauses_while_enough_of_its_messages_wait(http, api_url, redis_client):
    """The broker's backlog stays short: with every worker busy, the dispatch stops claiming once
    BATCH_DISPATCH_AHEAD of the batch's messages wait, and goes on as they are taken."""
    total = BATCH_DISPATCH_AHEAD + 3 * BATCH_DISPATCH_CHUNK
    created = post_batch(http, [{"agent": "sleep", "input": {"seconds": 30}}] * total)
    batch_id, run_ids = created["batch_id"], created["run_ids"]
    batch_key = BATCH_KEY.format(batch_id=batch_id)

    def cursor() -> int:
        return int(redis_client.hget(batch_key, "dispatched") or 0)

    try:
        eventually(lambda: cursor() >= BATCH_DISPATCH_AHEAD, timeout=60, what="the dispatch")
        time.sleep(3 * BATCH_DISPATCH_PAUSE_S + 1)  # it has come back, and found enough waiting
        assert cursor() < total, "the dispatch sent every message while none was taken"
        assert cursor() <= BATCH_DISPATCH_AHEAD + BATCH_DISPATCH_CHUNK
    finally:
        http.post(f"/batches/{batch_id}/cancel")
    frames = read_batch_stream(api_url, batch_id, timeout=120)
    check_batch_frames(frames, batch_id, run_ids)
    assert frames[-1].data["counts"] == {"cancelled": total}
