"""`runcast api` and `runcast worker` hand their extra options to uvicorn and Celery."""

from __future__ import annotations

import sys
from pathlib import Path

from tests.redis_server import free_port
from tests.services import Process, service_env, wait_http

RUNCAST = str(Path(sys.executable).parent / "runcast")


def test_runcast_api_passes_options_to_uvicorn(redis_url):
    port = free_port()
    api = Process([RUNCAST, "api", "--host", "127.0.0.1", "--port", str(port)],
                  service_env(redis_url), "runcast-api").start()
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz", api)  # uvicorn took --port
    finally:
        api.stop()


def test_runcast_worker_passes_options_to_celery(redis_url):
    worker = Process([RUNCAST, "worker", "-c", "1", "-n", "cli-options@%h", "-l", "info",
                      "--without-mingle", "--without-gossip"],
                     service_env(redis_url), "runcast-worker").start()
    try:
        worker.wait_for_output(" ready.", timeout=60)
        output = worker.output()
        assert "cli-options@" in output and "concurrency: 1" in output
        assert "events: ON" in output  # -E is always on
    finally:
        worker.stop()
