"""The HTTP API, route by route (DESIGN.md, "HTTP API"), against a real uvicorn, worker and Redis."""

from __future__ import annotations

import json
import time
from datetime import datetime

import httpx
import pytest

from tests.api_helpers import (
    ENVELOPE_FIELDS,
    RUN_FIELDS,
    Saturated,
    all_events,
    get_run,
    marker,
    submit,
    wait_terminal,
    wait_until,
    words,
)
from tests.log_check import check_log
from tests.redis_server import RedisServer
from tests.services import http_client, start_api

DEMO_AGENTS = {"echo", "countdown", "tokens", "async_tokens", "fail", "sleep", "block", "custom",
               "chatty"}
MAX_BODY = 1_048_576
HANG_GUARD_S = 15  # generous: only catches a wait that never returns


def assert_error(response: httpx.Response, status: int) -> None:
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert body.get("detail"), body


def parse_ts(value: str) -> datetime:
    return datetime.fromisoformat(value)


# POST /runs


def test_submit_answers_202_with_location_and_the_whole_run(http):
    payload = {"a": [1, 2, {"b": "ü"}]}
    response = http.post("/runs", json={"agent": "echo", "input": payload,
                                        "metadata": {"owner": "t"}})
    assert response.status_code == 202, response.text
    run = response.json()
    assert set(run) == RUN_FIELDS
    assert response.headers["location"] == f"/runs/{run['run_id']}"
    assert run["agent"] == "echo"
    assert run["status"] in {"queued", "running", "succeeded"}
    assert run["input"] == payload
    assert run["metadata"] == {"owner": "t"}
    assert run["batch_id"] is None
    assert run["cancel_requested"] is False
    assert run["error"] is None
    assert isinstance(run["stream_token"], str) and len(run["stream_token"]) >= 16
    assert len(run["run_id"]) >= 22  # 122 random bits or more
    parse_ts(run["created_at"])

    other = submit(http, "echo", payload)
    assert other["run_id"] != run["run_id"]

    done = wait_terminal(http, run["run_id"])
    assert set(done) == RUN_FIELDS
    assert done["status"] == "succeeded"
    assert done["output"] == {"echo": payload}
    assert done["attempt"] == 1
    assert done["last_seq"] == 2  # started, complete
    assert done["started_at"] and done["finished_at"]
    assert parse_ts(done["created_at"]) <= parse_ts(done["started_at"]) <= parse_ts(
        done["finished_at"])
    assert done["stream_token"] == run["stream_token"]
    wait_terminal(http, other["run_id"])


def test_submit_defaults_input_and_metadata(http):
    response = http.post("/runs", json={"agent": "echo"})
    assert response.status_code == 202, response.text
    run = response.json()
    assert run["input"] == {} and run["metadata"] == {}
    assert wait_terminal(http, run["run_id"])["output"] == {"echo": {}}


def test_submit_unknown_agent_is_404(http):
    assert_error(http.post("/runs", json={"agent": "no-such-agent", "input": {}}), 404)


@pytest.mark.parametrize("body", [
    {},                                                      # no agent
    {"input": {}},                                           # no agent
    {"agent": ""},                                           # empty agent
    {"agent": 5},                                            # wrong type
    {"agent": "echo", "agnet": "echo"},                      # unknown field
    {"agent": "echo", "timeout": "soon"},                    # wrong type
    {"agent": "echo", "timeout": -1},                        # not positive
    {"agent": "echo", "timeout": 0},
    {"agent": "echo", "metadata": [1, 2]},                   # not an object
    {"agent": "echo", "events": 7},
    {"agent": "echo", "events": ["token", "no_such_type"]},  # unknown filter name
    {"agent": "echo", "events": "no_such_preset"},
    {"agent": "echo", "events": ["custom:bad name!"]},
    {"agent": "echo", "idempotency_key": 12},
    [{"agent": "echo"}],                                     # not an object
], ids=lambda body: json.dumps(body))
def test_submit_invalid_body_is_422(http, body):
    assert_error(http.post("/runs", json=body), 422)


def test_submit_malformed_json_is_422(http):
    response = http.post("/runs", content=b'{"agent": "echo", "input": {',
                         headers={"content-type": "application/json"})
    assert_error(response, 422)
    assert_error(http.post("/runs", content=b"", headers={"content-type": "application/json"}),
                 422)
    # bytes that are not UTF-8 at all, JSON nested past Python's recursion limit, an integer past
    # its digit limit: JSON the parser gives up on, an invalid body like the rest (FastAPI's
    # own answer is a 400 "There was an error parsing the body")
    for content, why in ((b"\xff\xfe{", "codec can't decode"),
                         (b'{"agent": "echo", "input": ' + b"[" * 5000 + b"]" * 5000 + b"}",
                          "nested too deeply"),
                         (b'{"agent": "echo", "input": ' + b"9" * 5000 + b"}", "digits")):
        response = http.post("/runs", content=content,
                             headers={"content-type": "application/json"})
        assert_error(response, 422)
        assert why in response.json()["detail"], response.text


def test_submit_accepts_known_filters(http):
    for events in ("minimal", "chat", ["token", "custom"], ["custom:analysis_started"]):
        run = submit(http, "custom", {"document_id": "d"}, events=events)
        done = wait_terminal(http, run["run_id"])
        assert done["status"] == "succeeded", done
        kinds = [e["type"] for e in all_events(http, run["run_id"])]
        assert kinds[0] == "started" and kinds[-1] == "complete"
        if events == ["custom:analysis_started"]:
            assert kinds == ["started", "custom:analysis_started", "complete"]
        if events in ("minimal", "chat"):
            assert kinds == ["started", "complete"]


def test_body_over_the_cap_is_413(http):
    big = {"agent": "echo", "input": {"blob": "x" * (MAX_BODY + 10)}}
    response = http.post("/runs", json=big)  # with Content-Length
    assert_error(response, 413)


def test_chunked_body_over_the_cap_is_413(http):
    body = json.dumps({"agent": "echo", "input": {"blob": "x" * (MAX_BODY + 10)}}).encode()

    def chunks():
        for i in range(0, len(body), 65_536):
            yield body[i:i + 65_536]

    request = http.build_request("POST", "/runs", content=chunks(),
                                 headers={"content-type": "application/json"})
    assert "content-length" not in request.headers
    assert request.headers["transfer-encoding"] == "chunked"
    assert_error(http.send(request), 413)
    # the batch route has the same cap
    request = http.build_request("POST", "/batches", content=chunks(),
                                 headers={"content-type": "application/json"})
    assert_error(http.send(request), 413)


def test_chunked_body_under_the_cap_is_accepted(http):
    body = json.dumps({"agent": "echo", "input": {"blob": "y" * 900_000}}).encode()
    response = http.post("/runs", content=iter([body[:1000], body[1000:]]),
                         headers={"content-type": "application/json"})
    assert response.status_code == 202, response.text[:300]
    assert wait_terminal(http, response.json()["run_id"])["status"] == "succeeded"


# Idempotency


@pytest.mark.parametrize("via", ["body", "header"])
def test_idempotency_key_same_body_same_run_other_body_409(http, via):
    key = marker()
    body = {"agent": "echo", "input": {"n": 1}}
    kwargs = {"headers": {"Idempotency-Key": key}} if via == "header" else {}
    if via == "body":
        body["idempotency_key"] = key
    first = http.post("/runs", json=body, **kwargs)
    again = http.post("/runs", json=body, **kwargs)
    assert first.status_code == again.status_code == 202, (first.text, again.text)
    assert again.json()["run_id"] == first.json()["run_id"]
    assert again.headers["location"] == first.headers["location"]

    other = {**body, "input": {"n": 2}}
    assert_error(http.post("/runs", json=other, **kwargs), 409)
    other_agent = {**body, "agent": "countdown"}
    assert_error(http.post("/runs", json=other_agent, **kwargs), 409)
    # the key still names the first run
    assert http.post("/runs", json=body, **kwargs).json()["run_id"] == first.json()["run_id"]
    # a run without a key, or with another key, is a new run
    plain = {k: v for k, v in body.items() if k != "idempotency_key"}
    assert submit(http, **plain)["run_id"] != first.json()["run_id"]
    wait_terminal(http, first.json()["run_id"])


def test_idempotency_key_in_header_and_body_name_the_same_run(http):
    key = marker()
    by_body = http.post("/runs", json={"agent": "echo", "input": {}, "idempotency_key": key})
    by_header = http.post("/runs", json={"agent": "echo", "input": {}},
                          headers={"Idempotency-Key": key})
    assert by_body.status_code == by_header.status_code == 202
    assert by_body.json()["run_id"] == by_header.json()["run_id"]


# GET /runs/{id}


def test_get_unknown_run_is_404(http):
    assert_error(http.get(f"/runs/{marker()}"), 404)
    assert_error(http.get("/runs/not%20an%20id"), 404)


# GET /runs/{id}/wait


def test_wait_returns_the_terminal_run(http):
    run = submit(http, "countdown", {"steps": 3, "delay": 0.2})
    started = time.monotonic()
    response = http.get(f"/runs/{run['run_id']}/wait", params={"timeout": 30})
    elapsed = time.monotonic() - started
    assert response.status_code == 200
    done = response.json()
    assert set(done) == RUN_FIELDS
    assert done["status"] == "succeeded"
    assert done["output"] == {"steps": 3}
    assert done["progress"] == {"step": "3/3", "progress": 1.0, "message": "Step 3 of 3"}
    assert done["last_seq"] == 5
    assert elapsed < 20  # woken when the run ended, not at the 30 s timeout


def test_wait_returns_a_failed_run_with_its_error(http):
    run = submit(http, "fail", {"message": "boom"})
    done = wait_terminal(http, run["run_id"])
    assert done["status"] == "failed"
    assert done["error"]["error"] == "boom"
    assert done["error"]["code"] == "agent_error"
    assert done["error"]["details"]["type"] == "ValueError"
    assert done["output"] is None


def test_wait_returns_the_running_run_when_the_timeout_passes(http):
    run = submit(http, "sleep", {"seconds": 30})
    try:
        started = time.monotonic()
        response = http.get(f"/runs/{run['run_id']}/wait", params={"timeout": 1.5})
        elapsed = time.monotonic() - started
        assert response.status_code == 200
        body = response.json()
        assert body["run_id"] == run["run_id"]
        assert body["status"] in {"queued", "running"}
        assert elapsed >= 1.4  # it waited for the timeout
        assert elapsed < HANG_GUARD_S, "wait did not return after its timeout"
        # timeout=0 answers at once
        started = time.monotonic()
        response = http.get(f"/runs/{run['run_id']}/wait", params={"timeout": 0})
        assert response.status_code == 200 and response.json()["status"] in {"queued", "running"}
        assert time.monotonic() - started < HANG_GUARD_S, "timeout=0 did not answer at once"
    finally:
        http.post(f"/runs/{run['run_id']}/cancel")


def test_wait_timeout_out_of_range_is_422_and_unknown_run_404(http):
    run = submit(http, "echo")
    assert_error(http.get(f"/runs/{run['run_id']}/wait", params={"timeout": 301}), 422)
    assert_error(http.get(f"/runs/{run['run_id']}/wait", params={"timeout": -1}), 422)
    assert_error(http.get(f"/runs/{run['run_id']}/wait", params={"timeout": "soon"}), 422)
    assert http.get(f"/runs/{run['run_id']}/wait", params={"timeout": 300}).status_code == 200
    assert_error(http.get(f"/runs/{marker()}/wait", params={"timeout": 1}), 404)


# GET /runs/{id}/events


def test_events_pages_with_after_limit_next_after_and_done(http):
    run = submit(http, "tokens", {"text": words(10)})
    run_id = run["run_id"]
    assert wait_terminal(http, run_id)["last_seq"] == 12

    everything = http.get(f"/runs/{run_id}/events").json()
    assert set(everything) == {"events", "next_after", "done"}
    assert everything["next_after"] == 12 and everything["done"] is True
    events = everything["events"]
    check_log(run_id, events)
    assert all(set(e) == ENVELOPE_FIELDS for e in events)
    assert [e["type"] for e in events] == ["started"] + ["token"] * 10 + ["complete"]
    assert [e["data"]["content"] for e in events[1:-1]] == [f"w{i} " for i in range(10)]
    assert events[-2]["data"]["finish_reason"] == "stop"
    assert events[-1]["data"]["output"] == {"text": words(10)}

    pages, after = [], 0
    while True:
        page = http.get(f"/runs/{run_id}/events", params={"after": after, "limit": 5}).json()
        pages.append(page)
        after = page["next_after"]
        if page["done"]:
            break
        assert len(pages) < 10
    assert [[e["seq"] for e in p["events"]] for p in pages] == [
        [1, 2, 3, 4, 5], [6, 7, 8, 9, 10], [11, 12]]
    assert [p["next_after"] for p in pages] == [5, 10, 12]
    assert [p["done"] for p in pages] == [False, False, True]
    assert [e for p in pages for e in p["events"]] == events

    # a page that ends exactly at the terminal event is done too; past the end: empty, done
    exact = http.get(f"/runs/{run_id}/events", params={"after": 6, "limit": 6}).json()
    assert [e["seq"] for e in exact["events"]] == list(range(7, 13)) and exact["done"] is True
    tail = http.get(f"/runs/{run_id}/events", params={"after": 12}).json()
    assert tail == {"events": [], "next_after": 12, "done": True}


def test_events_of_a_running_run_are_not_done(http):
    run = submit(http, "sleep", {"seconds": 30})
    run_id = run["run_id"]
    try:
        wait_until(http, run_id, lambda r: r["last_seq"] >= 1)
        page = http.get(f"/runs/{run_id}/events", params={"after": 0}).json()
        assert page["events"][0]["type"] == "started"
        assert page["done"] is False
        empty = http.get(f"/runs/{run_id}/events", params={"after": page["next_after"]}).json()
        assert empty["done"] is False and empty["next_after"] == page["next_after"]
    finally:
        http.post(f"/runs/{run_id}/cancel")
    wait_terminal(http, run_id)
    page = http.get(f"/runs/{run_id}/events").json()
    assert page["done"] is True and page["events"][-1]["type"] == "cancelled"


def test_events_bad_parameters_422_unknown_run_404(http):
    run_id = submit(http, "echo")["run_id"]
    for params in ({"after": -1}, {"limit": 0}, {"limit": -5}, {"after": "x"}):
        assert_error(http.get(f"/runs/{run_id}/events", params=params), 422)
    assert_error(http.get(f"/runs/{marker()}/events"), 404)


# GET /runs


def test_list_runs_newest_first_with_cursor_paging(http):
    ids = []
    for i in range(3):
        ids.append(submit(http, "echo", {"i": i})["run_id"])
        time.sleep(0.01)
    for run_id in ids:
        wait_terminal(http, run_id)
    newest_first = list(reversed(ids))

    body = http.get("/runs", params={"agent": "echo", "limit": 3}).json()
    assert set(body) == {"runs", "next_cursor"}
    assert [r["run_id"] for r in body["runs"]] == newest_first
    assert all(set(r) == RUN_FIELDS and r["stream_token"] for r in body["runs"])

    first = http.get("/runs", params={"agent": "echo", "limit": 2}).json()
    assert [r["run_id"] for r in first["runs"]] == newest_first[:2]
    assert first["next_cursor"]
    second = http.get("/runs", params={"agent": "echo", "limit": 2,
                                       "cursor": first["next_cursor"]}).json()
    assert second["runs"][0]["run_id"] == newest_first[2]
    assert {r["run_id"] for r in second["runs"]}.isdisjoint(newest_first[:2])

    # unfiltered, newest first too
    latest = http.get("/runs", params={"limit": 3}).json()["runs"]
    created = [parse_ts(r["created_at"]) for r in latest]
    assert created == sorted(created, reverse=True)
    assert latest[0]["run_id"] == ids[-1]


def test_list_runs_filters_by_status_agent_and_batch(http):
    failed = submit(http, "fail", {"message": "x"})["run_id"]
    ok = submit(http, "echo", {"m": marker()})["run_id"]
    wait_terminal(http, failed)
    wait_terminal(http, ok)

    by_status = http.get("/runs", params={"status": "failed", "limit": 200}).json()["runs"]
    assert failed in {r["run_id"] for r in by_status}
    assert ok not in {r["run_id"] for r in by_status}
    assert {r["status"] for r in by_status} == {"failed"}

    by_agent = http.get("/runs", params={"agent": "fail", "limit": 200}).json()["runs"]
    assert by_agent[0]["run_id"] == failed
    assert {r["agent"] for r in by_agent} == {"fail"}

    both = http.get("/runs", params={"agent": "echo", "status": "succeeded"}).json()["runs"]
    assert both[0]["run_id"] == ok
    none = http.get("/runs", params={"agent": "echo", "status": "failed", "limit": 500}).json()
    assert ok not in {r["run_id"] for r in none["runs"]}
    # the contract writes the route `GET /runs?status=&agent=&batch_id=&limit=50&cursor=`:
    # empty parameters are no filter
    empty = http.get("/runs?status=&agent=&batch_id=&limit=50&cursor=")
    assert empty.status_code == 200, empty.text
    assert {ok, failed} <= {r["run_id"] for r in empty.json()["runs"]}
    assert_error(http.get("/runs", params={"status": "done"}), 422)

    batch = http.post("/batches", json={"runs": [{"agent": "echo", "input": {"i": i}}
                                                 for i in range(5)]}).json()
    seen, cursor, pages = [], None, 0
    while True:
        params = {"batch_id": batch["batch_id"], "limit": 2}
        if cursor:
            params["cursor"] = cursor
        page = http.get("/runs", params=params).json()
        seen += [r["run_id"] for r in page["runs"]]
        assert all(r["batch_id"] == batch["batch_id"] for r in page["runs"])
        cursor, pages = page["next_cursor"], pages + 1
        if not cursor:
            break
        assert pages < 10
    assert sorted(seen) == sorted(batch["run_ids"])  # each once
    assert http.get("/runs", params={"batch_id": marker()}).json() == {
        "runs": [], "next_cursor": None}


def test_list_runs_default_limit_is_50(http):
    batch = http.post("/batches", json={"runs": [{"agent": "echo", "input": {"i": i}}
                                                 for i in range(60)]}).json()
    first = http.get("/runs", params={"batch_id": batch["batch_id"]}).json()
    assert len(first["runs"]) == 50 and first["next_cursor"]
    rest = http.get("/runs", params={"batch_id": batch["batch_id"],
                                     "cursor": first["next_cursor"]}).json()
    assert len(rest["runs"]) == 10 and rest["next_cursor"] is None
    assert sorted(r["run_id"] for r in first["runs"] + rest["runs"]) == sorted(batch["run_ids"])
    for run_id in batch["run_ids"]:
        wait_terminal(http, run_id)


@pytest.mark.parametrize("params", [
    {"status": "bogus"}, {"limit": 0}, {"limit": -1}, {"limit": "many"},
    {"cursor": "not-a-cursor"},
])
def test_list_runs_bad_filter_is_422(http, params):
    assert_error(http.get("/runs", params=params), 422)


# POST /runs/{id}/cancel


def test_cancel_a_queued_run_ends_it_at_once_and_it_never_runs(http):
    with Saturated(http) as busy:
        probe = busy.probe
        assert get_run(http, probe)["status"] == "queued"
        response = http.post(f"/runs/{probe}/cancel", json={"reason": "not needed"})
        assert response.status_code == 202, response.text
        run = response.json()
        assert set(run) == RUN_FIELDS
        assert run["status"] == "cancelled"
        assert run["finished_at"]
        events = all_events(http, probe)
        assert [e["type"] for e in events] == ["cancelled"]
        assert events[0]["data"]["reason"] == "not needed"
    # the worker is free again: the cancelled run's message is taken and skipped
    follow = submit(http, "echo")
    wait_terminal(http, follow["run_id"])
    time.sleep(0.5)
    run = get_run(http, probe)
    assert run["status"] == "cancelled"
    assert run["started_at"] is None and run["attempt"] == 0
    assert [e["type"] for e in all_events(http, probe)] == ["cancelled"]


def test_cancel_a_running_run(http):
    run_id = submit(http, "sleep", {"seconds": 30})["run_id"]
    wait_until(http, run_id, lambda r: r["status"] == "running")
    started = time.monotonic()
    response = http.post(f"/runs/{run_id}/cancel", json={"reason": "user"})
    assert response.status_code == 202, response.text
    body = response.json()
    assert set(body) == RUN_FIELDS
    assert body["status"] in {"running", "cancelled"}
    assert body["cancel_requested"] is True
    done = wait_terminal(http, run_id, timeout=30)
    assert done["status"] == "cancelled"
    assert time.monotonic() - started < 15
    events = all_events(http, run_id)
    check_log(run_id, events)
    assert events[-1]["type"] == "cancelled"
    # ended: 409, and the run stays cancelled
    assert_error(http.post(f"/runs/{run_id}/cancel", json={"reason": "again"}), 409)
    assert_error(http.post(f"/runs/{run_id}/cancel"), 409)
    assert get_run(http, run_id)["status"] == "cancelled"


def test_cancel_without_a_body_and_of_ended_and_unknown_runs(http):
    run_id = submit(http, "sleep", {"seconds": 30})["run_id"]
    response = http.post(f"/runs/{run_id}/cancel")  # no body at all
    assert response.status_code == 202, response.text
    assert wait_terminal(http, run_id)["status"] == "cancelled"

    finished = submit(http, "echo")["run_id"]
    wait_terminal(http, finished)
    assert_error(http.post(f"/runs/{finished}/cancel", json={"reason": None}), 409)
    assert get_run(http, finished)["status"] == "succeeded"

    assert_error(http.post(f"/runs/{marker()}/cancel", json={"reason": None}), 404)
    assert_error(http.post(f"/runs/{run_id}/cancel", json={"reason": 5}), 422)
    assert_error(http.post(f"/runs/{run_id}/cancel", json={"why": "x"}), 422)


# Batches


def test_batch_submit_status_and_done(http):
    body = {"runs": [
        {"agent": "echo", "input": {"i": 1}},
        {"agent": "countdown", "input": {"steps": 2, "delay": 0.01}},
        {"agent": "tokens", "input": {"text": "a b"}, "events": "minimal"},
    ], "metadata": {"job": "t"}}
    response = http.post("/batches", json=body)
    assert response.status_code == 202, response.text
    created = response.json()
    assert set(created) == {"batch_id", "run_ids", "total"}
    assert created["total"] == 3 and len(set(created["run_ids"])) == 3
    runs = [get_run(http, run_id) for run_id in created["run_ids"]]
    assert [r["agent"] for r in runs] == ["echo", "countdown", "tokens"]  # in request order
    assert {r["batch_id"] for r in runs} == {created["batch_id"]}
    for run_id in created["run_ids"]:
        assert wait_terminal(http, run_id)["status"] == "succeeded"
    assert [e["type"] for e in all_events(http, created["run_ids"][2])] == ["started", "complete"]

    status = http.get(f"/batches/{created['batch_id']}")
    assert status.status_code == 200
    body = status.json()
    created_at, finished_at = body.pop("created_at"), body.pop("finished_at")
    assert body == {"batch_id": created["batch_id"], "total": 3, "counts": {"succeeded": 3},
                    "done": True}
    assert created_at == runs[0]["created_at"]
    assert finished_at == max(get_run(http, r)["finished_at"] for r in created["run_ids"])


def test_batch_cancel(http):
    created = http.post("/batches", json={"runs": [
        {"agent": "sleep", "input": {"seconds": 30}} for _ in range(2)]}).json()
    batch_id = created["batch_id"]
    status = http.get(f"/batches/{batch_id}").json()
    assert status["done"] is False and status["total"] == 2
    assert sum(status["counts"].values()) == 2
    assert set(status["counts"]) <= {"queued", "running"}

    response = http.post(f"/batches/{batch_id}/cancel")
    assert response.status_code == 202, response.text
    assert response.json()["batch_id"] == batch_id
    for run_id in created["run_ids"]:
        assert wait_terminal(http, run_id, timeout=30)["status"] == "cancelled"
    ended = http.get(f"/batches/{batch_id}").json()
    assert ended.pop("created_at") and ended.pop("finished_at")
    assert ended == {"batch_id": batch_id, "total": 2, "counts": {"cancelled": 2}, "done": True}
    # cancelling again cancels nothing and is no error
    again = http.post(f"/batches/{batch_id}/cancel")
    assert again.status_code == 202 and again.json()["counts"] == {"cancelled": 2}


@pytest.mark.parametrize("bad_run, status", [
    ({"agent": "no-such-agent", "input": {}}, 404),
    ({"agent": "echo", "events": ["nope"]}, 422),
    ({"agent": "echo", "timeout": -5}, 422),
    ({"agent": "echo", "surprise": 1}, 422),
    ({"input": {}}, 422),
])
def test_batch_is_all_or_nothing(http, bad_run, status):
    tag = marker()
    body = {"runs": [{"agent": "echo", "input": {"tag": tag}}, bad_run,
                     {"agent": "echo", "input": {"tag": tag}}]}
    assert_error(http.post("/batches", json=body), status)
    time.sleep(0.2)
    recent = http.get("/runs", params={"agent": "echo", "limit": 200}).json()["runs"]
    assert not [r for r in recent if r["input"] == {"tag": tag}], "a refused batch left runs"


def test_batch_sizes_out_of_range_are_422(http):
    assert_error(http.post("/batches", json={"runs": []}), 422)
    assert_error(http.post("/batches", json={}), 422)
    too_many = {"runs": [{"agent": "echo"}] * 10_001}
    assert_error(http.post("/batches", json=too_many), 422)


def test_unknown_batch_is_404(http):
    assert_error(http.get(f"/batches/{marker()}"), 404)
    assert_error(http.post(f"/batches/{marker()}/cancel"), 404)


# System


def test_agents(http):
    response = http.get("/agents")
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"agents"}
    by_name = {a["name"]: a for a in body["agents"]}
    assert DEMO_AGENTS <= set(by_name)
    for info in body["agents"]:
        assert set(info) == {"name", "description", "events", "timeout", "queue"}
    assert by_name["echo"]["description"] == "Return the input unchanged"
    assert by_name["echo"]["queue"] == "default"


def test_healthz_ok_with_a_worker(http):
    response = http.get("/healthz")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok" and body["redis"] == "ok"
    assert isinstance(body["workers"], int) and body["workers"] >= 1


def test_healthz_and_routes_503_when_redis_is_down():
    server = RedisServer().start()
    process = None
    try:
        process, url = start_api(server.url)
        with http_client(url) as http:
            up = http.get("/healthz")
            assert up.status_code == 200 and up.json()["redis"] == "ok"
            assert up.json()["workers"] == 0  # nobody works for this Redis
            server.stop()
            started = time.monotonic()
            down = http.get("/healthz")
            assert_error(down, 503)
            assert down.json()["status"] != "ok"
            assert time.monotonic() - started < 20
            assert_error(http.get(f"/runs/{marker()}"), 503)
            assert_error(http.post("/runs", json={"agent": "echo"}), 503)
            server.start()  # same port: the API recovers
            deadline = time.monotonic() + 20
            while http.get("/healthz").status_code != 200:
                assert time.monotonic() < deadline, "the API did not recover with Redis"
                time.sleep(0.2)
    finally:
        if process is not None:
            process.stop()
        server.cleanup()
