"""RUNCAST_BROKER_URL=amqp://...: RabbitMQ carries the tasks, Redis keeps runs and events."""

from __future__ import annotations

import socket
import time

import pytest

from tests.services import http_client, start_api, start_worker

AMQP_URL = "amqp://guest:guest@127.0.0.1:5672//"


def rabbitmq_listening() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 5672), timeout=1):
            return True
    except OSError:
        return False


pytestmark = pytest.mark.skipif(
    not rabbitmq_listening(), reason="no RabbitMQ on 127.0.0.1:5672 to try the AMQP broker with"
)


def test_runs_and_cancel_over_an_amqp_broker(redis_url):
    env = {"RUNCAST_BROKER_URL": AMQP_URL}
    worker = start_worker(redis_url, name="amqp", concurrency=2, **env)
    api, url = start_api(redis_url, **env)
    try:
        with http_client(url, timeout=30) as http:
            run = http.post("/runs", json={"agent": "countdown",
                                           "input": {"steps": 3, "delay": 0.05}}).json()
            done = http.get(f"/runs/{run['run_id']}/wait", params={"timeout": 30}).json()
            assert done["status"] == "succeeded" and done["output"] == {"steps": 3}
            events = http.get(f"/runs/{run['run_id']}/events").json()["events"]
            assert [e["type"] for e in events] == ["started", *["progress"] * 3, "complete"]

            slow = http.post("/runs", json={"agent": "sleep", "input": {"seconds": 30}}).json()
            deadline = time.monotonic() + 30
            while http.get(f"/runs/{slow['run_id']}").json()["status"] != "running":
                assert time.monotonic() < deadline, "the run did not start"
                time.sleep(0.05)
            assert http.post(f"/runs/{slow['run_id']}/cancel").status_code == 202
            ended = http.get(f"/runs/{slow['run_id']}/wait", params={"timeout": 30}).json()
            assert ended["status"] == "cancelled"
        assert "amqp://" in worker.output()  # the worker really was on RabbitMQ
    finally:
        api.stop()
        worker.stop()
