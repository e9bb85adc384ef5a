"""Embedded mode (REDIS_URL=memory://, API and worker threads in one process) keeps the same HTTP
contract as Redis mode: every check below runs against both, over real HTTP.

The embedded service runs `api.embedded.EmbeddedServer` in a child process: configuring it
rewires this process's `tasks` runtime (settings and Celery app are per process), which would
pull the Redis-configured runtime the other tests share out from under them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from tests.api_helpers import (
    RUN_FIELDS,
    all_events,
    assert_frame_matches_envelope,
    get_run,
    read_frames,
    submit,
    wait_terminal,
    wait_until,
)
from tests.log_check import check_log
from tests.services import ROOT, embedded_service, http_client

DEMO_AGENTS = {"echo", "countdown", "tokens", "async_tokens", "fail", "sleep", "block", "custom",
               "chatty"}


MODES = ["embedded", "redis"]
modes = pytest.mark.parametrize("mode", MODES)


@pytest.fixture(scope="module")
def embedded_url():
    with embedded_service() as url:
        yield url


@pytest.fixture
def http(mode, request):
    url = request.getfixturevalue("embedded_url" if mode == "embedded" else "api_url")
    with http_client(url, timeout=30) as client:
        yield client


def progress_data(event: dict) -> dict:
    return {key: event["data"][key] for key in ("step", "progress", "message")}


@modes
def test_healthz(http, mode):
    response = http.get("/healthz")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "ok"
    assert body["workers"] >= 1
    if mode == "redis":
        assert body["redis"] == "ok"


@modes
def test_agents_lists_the_demo_agents(http, mode):
    response = http.get("/agents")
    assert response.status_code == 200, response.text
    agents = {agent["name"]: agent for agent in response.json()["agents"]}
    assert DEMO_AGENTS <= set(agents)
    for agent in agents.values():
        assert {"name", "description", "events", "timeout", "queue"} <= set(agent)
    assert agents["echo"]["description"]


@modes
def test_submit_echo_then_wait(http, mode):
    payload = {"hello": "world", "n": [1, 2]}
    response = http.post("/runs", json={"agent": "echo", "input": payload,
                                        "metadata": {"who": "test"}})
    assert response.status_code == 202, response.text
    run = response.json()
    assert set(run) == RUN_FIELDS
    assert response.headers["location"] == f"/runs/{run['run_id']}"
    assert run["agent"] == "echo" and run["input"] == payload
    assert run["status"] in {"queued", "running", "succeeded"}

    done = wait_terminal(http, run["run_id"])
    assert done["status"] == "succeeded"
    assert done["output"] == {"echo": payload}
    assert done["error"] is None
    assert done["metadata"] == {"who": "test"}
    assert done["finished_at"] and done["started_at"]
    assert get_run(http, run["run_id"])["status"] == "succeeded"
    assert http.get(f"/runs/no-such-{uuid.uuid4().hex}").status_code == 404


@modes
def test_countdown_events_by_polling(http, mode):
    run_id = submit(http, "countdown", {"steps": 3, "delay": 0.05})["run_id"]
    run = wait_terminal(http, run_id)
    assert run["status"] == "succeeded" and run["output"] == {"steps": 3}

    events = all_events(http, run_id)
    check_log(run_id, events)
    assert [e["type"] for e in events] == ["started"] + ["progress"] * 3 + ["complete"]
    assert [e["data"]["progress"] for e in events[1:4]] == pytest.approx([1 / 3, 2 / 3, 1.0])
    assert events[-1]["data"]["output"] == {"steps": 3}
    assert run["last_seq"] == events[-1]["seq"]

    pages, after = [], 0  # page by page, two at a time
    while True:
        response = http.get(f"/runs/{run_id}/events", params={"after": after, "limit": 2})
        assert response.status_code == 200, response.text
        page = response.json()
        pages.extend(page["events"])
        after = page["next_after"]
        if page["done"]:
            break
        assert page["events"], "an empty page that is not done, for an ended run"
    assert pages == events


@modes
def test_countdown_events_over_sse(http, mode):
    run_id = submit(http, "countdown", {"steps": 4, "delay": 0.1})["run_id"]
    with http.stream("GET", f"/runs/{run_id}/stream", timeout=60) as response:  # live
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        frames = read_frames(response)  # the server closes after the terminal event
    for frame in frames:
        assert_frame_matches_envelope(frame, run_id)
    assert [int(frame.id) for frame in frames] == list(range(1, len(frames) + 1))
    check_log(run_id, [frame.data for frame in frames])
    assert [frame.event for frame in frames] == ["started"] + ["progress"] * 4 + ["complete"]

    # resumed after seq 3 with Last-Event-ID: only what follows
    with http.stream("GET", f"/runs/{run_id}/stream", headers={"Last-Event-ID": "3"},
                     timeout=60) as response:
        rest = read_frames(response)
    assert [f.seq for f in rest] == [f.seq for f in frames[3:]]
    assert [f.data for f in rest] == [f.data for f in frames[3:]]


@modes
def test_progress_field_follows_the_latest_progress_event(http, mode):
    run_id = submit(http, "countdown", {"steps": 5, "delay": 0.3})["run_id"]
    seen = []
    deadline = time.monotonic() + 30
    while True:
        run = get_run(http, run_id)
        if run["status"] == "running" and run["progress"] is not None:
            seen.append(run["progress"])
        if run["status"] in {"succeeded", "failed", "cancelled"}:
            break
        assert time.monotonic() < deadline, run
        time.sleep(0.05)
    events = all_events(http, run_id)
    emitted = [progress_data(e) for e in events if e["type"] == "progress"]
    assert len(emitted) == 5
    assert seen, "the run never showed its progress while it ran"
    for value in seen:
        assert value in emitted, (value, emitted)
    fractions = [value["progress"] for value in seen]
    assert fractions == sorted(fractions), "progress went backwards"
    assert run["progress"] == emitted[-1]  # the last one, once ended


@modes
def test_cancel_a_running_sleep(http, mode):
    run_id = submit(http, "sleep", {"seconds": 60})["run_id"]
    wait_until(http, run_id, lambda run: run["status"] == "running")
    began = time.monotonic()
    response = http.post(f"/runs/{run_id}/cancel", json={"reason": "test says stop"})
    assert response.status_code == 202, response.text
    assert response.json()["cancel_requested"] is True
    run = wait_terminal(http, run_id, timeout=30)
    assert run["status"] == "cancelled"
    assert time.monotonic() - began < 20
    events = all_events(http, run_id)
    check_log(run_id, events)
    assert events[-1]["type"] == "cancelled"
    assert events[-1]["data"]["reason"] == "test says stop"


@modes
def test_cancel_an_ended_run_is_409(http, mode):
    run_id = submit(http, "echo", {"x": 1})["run_id"]
    assert wait_terminal(http, run_id)["status"] == "succeeded"
    response = http.post(f"/runs/{run_id}/cancel", json={"reason": None})
    assert response.status_code == 409, response.text
    assert "detail" in response.json()
    assert get_run(http, run_id)["status"] == "succeeded"
    assert http.post(f"/runs/no-such-{uuid.uuid4().hex}/cancel", json={}).status_code == 404


@modes
def test_failing_agent(http, mode):
    run_id = submit(http, "fail", {"message": "boom"})["run_id"]
    run = wait_terminal(http, run_id)
    assert run["status"] == "failed"
    assert run["output"] is None
    assert run["error"]["code"] == "agent_error"
    assert "boom" in run["error"]["error"]
    assert run["error"]["details"]["type"] == "ValueError"
    events = all_events(http, run_id)
    check_log(run_id, events)
    assert events[-1]["type"] == "error"
    assert events[-1]["data"]["code"] == "agent_error"
    assert "Traceback" not in str(events[-1]["data"])


@modes
def test_unknown_agent_is_404(http, mode):
    response = http.post("/runs", json={"agent": "no_such_agent", "input": {}})
    assert response.status_code == 404, response.text
    assert "no_such_agent" in response.json()["detail"]
    response = http.post("/runs", json={"agent": "echo", "input": {}, "surprise": 1})
    assert response.status_code == 422, response.text


@modes
def test_batch_of_five(http, mode):
    response = http.post("/batches", json={
        "runs": [{"agent": "echo", "input": {"i": i}} for i in range(5)], "metadata": {"b": 1},
    })
    assert response.status_code == 202, response.text
    batch = response.json()
    assert batch["total"] == 5 and len(set(batch["run_ids"])) == 5
    deadline = time.monotonic() + 30
    while True:
        response = http.get(f"/batches/{batch['batch_id']}")
        assert response.status_code == 200, response.text
        status = response.json()
        if status["done"]:
            break
        assert time.monotonic() < deadline, status
        time.sleep(0.05)
    assert status["batch_id"] == batch["batch_id"] and status["total"] == 5
    assert {s: n for s, n in status["counts"].items() if n} == {"succeeded": 5}
    for i, run_id in enumerate(batch["run_ids"]):
        run = get_run(http, run_id)
        assert run["batch_id"] == batch["batch_id"]
        assert run["output"] == {"echo": {"i": i}}
    listed = http.get("/runs", params={"batch_id": batch["batch_id"]}).json()["runs"]
    assert {run["run_id"] for run in listed} == set(batch["run_ids"])


def test_runcast_demo_runs_without_redis():
    env = {k: v for k, v in os.environ.items()
           if k != "REDIS_URL" and not k.startswith("RUNCAST_")}
    env["PYTHONPATH"] = str(ROOT)
    result = subprocess.run([str(Path(sys.executable).parent / "runcast"), "demo"], env=env,
                            check=False, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "demo finished as expected" in result.stdout
    for status in ("succeeded", "failed", "cancelled", "20 succeeded"):
        assert status in result.stdout


@modes
def test_batch_stream_and_results(http, mode):
    from tests.batch_support import check_batch_frames, read_batch_stream

    response = http.post("/batches", json={
        "runs": [{"agent": "echo", "input": {"i": i}} for i in range(12)]})
    assert response.status_code == 202, response.text
    batch = response.json()
    url = str(http.base_url).rstrip("/")
    frames = read_batch_stream(url, batch["batch_id"], timeout=60)
    check_batch_frames(frames, batch["batch_id"], batch["run_ids"])
    assert frames[-1].data["counts"] == {"succeeded": 12}
    assert read_batch_stream(url, batch["batch_id"], last_event_id=10) == frames[10:]
    status = http.get(f"/batches/{batch['batch_id']}").json()
    assert status["done"] and status["created_at"] and status["finished_at"]
    page = http.get(f"/batches/{batch['batch_id']}/results", params={"limit": 5}).json()
    assert [r["index"] for r in page["results"]] == [0, 1, 2, 3, 4]
    assert page["next_after"] == 5 and not page["done"]
    lines = http.get(f"/batches/{batch['batch_id']}/results",
                     headers={"Accept": "application/x-ndjson"}).text.splitlines()
    results = [json.loads(line) for line in lines]
    assert [r["output"] for r in results] == [{"echo": {"i": i}} for i in range(12)]
    assert [r["run_id"] for r in results] == batch["run_ids"]
