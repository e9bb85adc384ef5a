"""A private world for tests that kill workers: its own redis-server, the workers started in it,
a Runtime reading it and a Celery client (tests/test_runs_lost.py, tests/test_checkpoint_resume.py).

Runs are submitted by a short-lived `python -c` with the same environment as the workers.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys

import pytest
from celery import Celery

from tasks.runtime import Runtime
from tasks.settings import Settings
from tests.redis_server import RedisServer
from tests.services import ROOT, service_env, start_worker

LOST_DEADLINE_S = 60  # the contract: a lost run runs again or fails within 60 s


@pytest.fixture
def world():
    """A private redis-server, the workers started in it, a reader and a Celery client."""
    server = RedisServer().start()
    state = World(server)
    yield state
    state.close()


class World:
    def __init__(self, server: RedisServer) -> None:
        self.server = server
        self.url = server.url
        self.workers = []
        self.rt = Runtime(Settings(redis_url=self.url))
        self.celery = Celery("lost-tests", broker=self.url, set_as_current=False)
        self.celery.conf.update(task_serializer="json", accept_content=["json"])

    def worker(self, name: str, queues: str = "default", concurrency: int = 1, **env: str):
        process = start_worker(self.url, name=name, concurrency=concurrency,
                               extra_args=["-Q", queues], **env)
        self.workers.append(process)
        return process

    def submit(self, agent: str, payload: dict, **env: str) -> str:
        code = ("import json, sys, tasks; "
                "print(tasks.submit(sys.argv[1], json.loads(sys.argv[2])))")
        out = subprocess.run([sys.executable, "-c", code, agent, json.dumps(payload)],
                             env=service_env(self.url, **env), cwd=ROOT, capture_output=True,
                             text=True, timeout=60, check=True)
        return out.stdout.strip().splitlines()[-1]

    def run(self, run_id: str) -> dict:
        from tasks.store import public

        return public(self.rt.store.get(run_id))

    def events(self, run_id: str):
        return self.rt.events.read(run_id)

    def close(self) -> None:
        for process in self.workers:
            process.kill(signal.SIGKILL)
            if hasattr(process, "log"):
                process.log.close()
        self.rt.close()
        self.server.cleanup()
