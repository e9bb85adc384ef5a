"""Real processes for tests: Celery workers, the API under uvicorn, Flower."""

from __future__ import annotations

import atexit
import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from tests.redis_server import free_port

ROOT = Path(__file__).resolve().parent.parent
# The output of every process this one starts, removed when this one exits (a failing test has
# shown what it needed by then).
LOG_DIR = Path(tempfile.mkdtemp(prefix="runcast-logs-"))
atexit.register(shutil.rmtree, LOG_DIR, ignore_errors=True)
BIN = Path(sys.executable).parent


def service_env(redis_url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNCAST_")}
    env.update(REDIS_URL=redis_url, PYTHONPATH=str(ROOT), RUNCAST_CANCEL_GRACE="1",
               PYTHONUNBUFFERED="1")
    env.update(extra)
    return env


class Process:
    """A child process with its output in a temp file, stopped (and its group killed) after."""

    def __init__(self, args: list[str], env: dict[str, str], name: str) -> None:
        self.args, self.env, self.name = args, env, name
        self.log_path = Path(tempfile.mkstemp(prefix=f"{name}-", suffix=".log", dir=LOG_DIR)[1])
        self.proc: subprocess.Popen | None = None

    def start(self) -> Process:
        self.log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(self.args, env=self.env, cwd=ROOT, stdout=self.log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        return self

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for_output(self, text: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.output():
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited:\n{self.output()[-3000:]}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.name} did not print {text!r}:\n{self.output()[-3000:]}")
            time.sleep(0.05)

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Signal the whole process group (a Celery worker and its pool children)."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)
            self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(timeout=15)
            except (subprocess.TimeoutExpired, ProcessLookupError):
                self.kill()
        if hasattr(self, "log"):
            self.log.close()


def start_worker(redis_url: str, name: str = "w1", concurrency: int = 4,
                 extra_args: list[str] | None = None, app: str = "tasks", **env: str) -> Process:
    """`celery -A app worker` (runcast's by default) once it says it is ready."""
    args = [str(BIN / "celery"), "-A", app, "worker", "-E", "-l", "info",
            "-c", str(concurrency), "-n", f"{name}@%h", "--without-gossip", "--without-mingle",
            *(extra_args or [])]
    worker = Process(args, service_env(redis_url, **env), f"worker-{name}").start()
    worker.wait_for_output(" ready.", timeout=60)
    return worker


def start_api(redis_url: str, app: str = "api.app:app", ready_path: str = "/healthz",
              **env: str) -> tuple[Process, str]:
    """`app` under uvicorn on a free port, once `ready_path` answers."""
    port = free_port()
    args = [str(BIN / "uvicorn"), app, "--host", "127.0.0.1", "--port", str(port),
            "--log-level", "warning"]
    api = Process(args, service_env(redis_url, **env), "api").start()
    url = f"http://127.0.0.1:{port}"
    wait_http(url + ready_path, api)
    return api, url


def http_client(url: str, timeout: float = 60, **kwargs: Any) -> httpx.Client:
    """A client of the API at `url` (requests take paths: `client.get("/runs")`): what every
    `http` fixture and ad-hoc client of the tests is built with."""
    return httpx.Client(base_url=url, timeout=timeout, **kwargs)


def wait_http(url: str, process: Process, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(url, timeout=1).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        if process.proc.poll() is not None:
            raise RuntimeError(f"{process.name} exited:\n{process.output()[-3000:]}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{url} did not answer:\n{process.output()[-3000:]}")
        time.sleep(0.1)


# An embedded service (api.embedded: API and worker threads in one process, no Redis) in a child
# process that prints its URL and stops on SIGTERM.
EMBEDDED_SCRIPT = """
import os, signal, threading
from api.embedded import EmbeddedServer

stop = threading.Event()
signal.signal(signal.SIGTERM, lambda *_: stop.set())
server = EmbeddedServer()
print("EMBEDDED_URL=" + server.start(), flush=True)
stop.wait()
server.stop()
os._exit(0)
"""


@contextlib.contextmanager
def embedded_service(name: str = "embedded", **extra: str) -> Iterator[str]:
    """The URL of an embedded service started with `extra` in its environment (no REDIS_URL:
    EmbeddedServer picks memory:// itself); stopped on exit."""
    env = service_env("memory://", **extra)
    env.pop("REDIS_URL")
    process = Process([sys.executable, "-c", EMBEDDED_SCRIPT], env, name).start()
    try:
        process.wait_for_output("EMBEDDED_URL=", timeout=60)
        yield re.search(r"EMBEDDED_URL=(\S+)", process.output()).group(1)
    finally:
        process.stop()
