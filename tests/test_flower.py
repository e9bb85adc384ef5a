"""Flower monitors runs (issue 3): each run is a Celery task named runcast.agent.<name>, with
the run id as its task id, sent and succeeded events on, behind basic auth."""

from __future__ import annotations

import ast
import json
import time
import uuid

import httpx
import pytest
import redis

from tests.redis_server import free_port
from tests.runs_support import eventually, finish
from tests.services import BIN, Process, service_env, wait_http

AUTH = ("user", "pass")


@pytest.fixture(scope="module")
def flower_url(redis_url, worker):
    port = free_port()
    args = [str(BIN / "celery"), "-A", "tasks", "flower", f"--port={port}", "--address=127.0.0.1",
            "--basic-auth=user:pass"]
    process = Process(args, service_env(redis_url), "flower").start()
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(url + "/healthcheck", process, timeout=60)
        yield url
    finally:
        process.stop()


def test_flower_needs_basic_auth(flower_url):
    assert httpx.get(flower_url + "/api/tasks", timeout=10).status_code == 401
    assert httpx.get(flower_url + "/api/tasks", auth=("user", "wrong"),
                     timeout=10).status_code == 401
    assert httpx.get(flower_url + "/api/tasks", auth=AUTH, timeout=10).status_code == 200


def test_flower_shows_a_run_as_its_agent_task(runcast, flower_url):
    # Flower learns about tasks from live events; a run submitted before its event receiver
    # is connected is missed, so submit again until one shows (a hang guard, not a speed test).
    deadline = time.monotonic() + 60
    submitted: list[str] = []
    found = None
    while found is None:
        assert time.monotonic() < deadline, f"Flower never showed any of {submitted}"
        run_id = runcast.submit("echo", {"flower": len(submitted)})
        submitted.append(run_id)
        finish(runcast, run_id)
        until = time.monotonic() + 5
        while found is None and time.monotonic() < until:
            tasks = httpx.get(flower_url + "/api/tasks", auth=AUTH, timeout=10).json()
            for task_id in submitted:
                info = tasks.get(task_id)
                if info and info.get("state") == "SUCCESS":
                    found = task_id, info
            time.sleep(0.2)
    run_id, info = found
    assert info["name"] == "runcast.agent.echo"
    assert info["uuid"] == run_id
    assert run_id in info["args"]
    # the task's return value is shown: the run id and its status
    assert run_id in info["result"] and "succeeded" in info["result"]
    assert info["worker"].startswith("w1@")
    assert info["received"] and info["succeeded"]

    one = httpx.get(f"{flower_url}/api/task/info/{run_id}", auth=AUTH, timeout=10)
    assert one.status_code == 200
    assert one.json()["name"] == "runcast.agent.echo"


# -- Flower mirrors the run (DESIGN.md, "Runs"; issue 13) ------------------------------------

INTERNAL_FILES = ("tasks/execute.py", "tasks/demo.py", "tasks/worker_side.py", "tasks/reaper.py",
                  "streaming/")


@pytest.fixture(scope="module")
def flower_live(runcast, flower_url):
    """Flower's event receiver is connected: a run submitted now is seen (see above)."""
    deadline = time.monotonic() + 60
    while True:
        run_id = runcast.submit("echo", {"probe": True})
        finish(runcast, run_id)
        until = time.monotonic() + 5
        while time.monotonic() < until:
            if flower_task(flower_url, run_id).get("state") == "SUCCESS":
                return flower_url
            time.sleep(0.2)
        assert time.monotonic() < deadline, "Flower never showed a run"


def flower_task(flower_url: str, run_id: str) -> dict:
    response = httpx.get(f"{flower_url}/api/task/info/{run_id}", auth=AUTH, timeout=10)
    return response.json() if response.status_code == 200 else {}


def flower_state(flower_url: str, run_id: str, state: str, timeout: float = 30) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        info = flower_task(flower_url, run_id)
        if info.get("state") == state:
            return info
        assert time.monotonic() < deadline, f"Flower shows {info.get('state')}, not {state}"
        time.sleep(0.2)


def test_flower_shows_a_failed_run_as_failure_with_code_and_message(runcast, flower_live):
    message = "no luck " + uuid.uuid4().hex
    run_id = runcast.submit("fail", {"message": message})
    run, _events = finish(runcast, run_id)
    assert run["status"] == "failed"
    info = flower_state(flower_live, run_id, "FAILURE")
    assert "agent_error" in info["exception"] and message in info["exception"]
    traceback = info.get("traceback") or ""
    for internal in INTERNAL_FILES:
        assert internal not in traceback, traceback
    assert "ValueError" not in traceback  # the agent's own exception stays in the worker log
    assert "agent_error" in traceback or traceback == ""
    time.sleep(1)  # a late event must not turn it green
    assert flower_task(flower_live, run_id)["state"] == "FAILURE"


@pytest.mark.parametrize("agent", ["sleep", "block"])
def test_flower_shows_a_timed_out_run_as_failure(runcast, flower_live, agent):
    # `block` ignores its cancellation: its process is stopped hard after the grace period,
    # and Celery then reports the task revoked; Flower must still show the failure
    run_id = runcast.submit(agent, {"seconds": 8}, timeout=0.5)
    run, _events = finish(runcast, run_id)
    assert run["error"]["code"] == "timeout"
    info = flower_state(flower_live, run_id, "FAILURE")
    assert "timeout" in info["exception"]
    time.sleep(2)  # past the hard stop
    assert flower_task(flower_live, run_id)["state"] == "FAILURE"


def test_flower_shows_a_cancelled_run_as_revoked(runcast, flower_live):
    running = runcast.submit("sleep", {"seconds": 30})
    eventually(lambda: runcast.get_run(running)["status"] == "running", 30,
               what="the sleep running")
    runcast.cancel(running, "enough")
    early = runcast.submit("sleep", {"seconds": 30})
    runcast.cancel(early, "at once")  # queued or just started: cancelled either way
    for run_id in (running, early):
        assert runcast.wait(run_id, timeout=30)["status"] == "cancelled"
        flower_state(flower_live, run_id, "REVOKED")
    time.sleep(1)
    for run_id in (running, early):
        assert flower_task(flower_live, run_id)["state"] == "REVOKED"


def test_flower_args_are_the_run_id_and_a_short_input_preview(runcast, flower_live):
    secret = "sk-" + uuid.uuid4().hex
    text = "a long document " * 100
    run_id = runcast.submit("echo", {"text": text, "api_key": secret, "auth": {"token": secret}})
    finish(runcast, run_id)
    info = flower_state(flower_live, run_id, "SUCCESS")
    shown_id, preview = ast.literal_eval(info["args"])
    assert shown_id == run_id
    assert len(preview) <= 200
    assert preview.startswith('{"text":') and "a long document" in preview
    assert secret not in info["args"] and secret not in info["kwargs"]
    assert text not in info["args"]
    small = runcast.submit("echo", {"api_key": secret, "n": 1})
    finish(runcast, small)
    shown_id, preview = ast.literal_eval(flower_state(flower_live, small, "SUCCESS")["args"])
    assert shown_id == small
    assert json.loads(preview) == {"api_key": "***", "n": 1}


def test_a_redelivered_message_of_an_ended_run_runs_nothing(runcast, flower_live, redis_url):
    from tasks import runtime

    run_id = runcast.submit("fail", {"message": "once"})
    run, events = finish(runcast, run_id)
    flower_state(flower_live, run_id, "FAILURE")
    runtime().enqueue(run_id, "fail", 1, input_json='{"message": "once"}')  # the same message again
    time.sleep(2)
    again, events_again = finish(runcast, run_id)
    assert again == run and events_again == events  # no second execution
    assert flower_task(flower_live, run_id)["state"] == "FAILURE"
    client = redis.Redis.from_url(redis_url)
    try:  # the failed task's message was acknowledged, not kept for redelivery
        assert not any(run_id.encode() in m for m in client.hvals("unacked"))
    finally:
        client.close()
    # and the worker lives on
    echo = runcast.submit("echo", {})
    assert finish(runcast, echo)[0]["status"] == "succeeded"
