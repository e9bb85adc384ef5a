"""Flower monitors runs (issue 3): each run is a Celery task named runcast.agent.<name>, with
the run id as its task id, sent and succeeded events on, behind basic auth."""

from __future__ import annotations

import time

import httpx
import pytest

from tests.redis_server import free_port
from tests.runs_support import finish
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
