"""Helpers of the faults suite: a private cluster (redis-server, workers, API), SSE followers
that record every frame they receive (duplicates included) and the figures printed.
"""

from __future__ import annotations

import json
import random
import signal
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
import redis

from api.sse_parse import SSEFrame, SSEParser
from tests.log_check import TERMINAL_STATUSES, TERMINAL_TYPES
from tests.redis_server import RedisServer
from tests.services import BIN, Process, service_env, start_api

AGENTS = "tasks.demo,tests.reliability.agents"
FIGURES: list[str] = []  # one line per test, printed by the module's last fixture teardown


def report(line: str) -> None:
    FIGURES.append(line)
    print(f"\nFAULTS {line}", flush=True)


class Cluster:
    """One test's own redis-server, Celery workers and API, all torn down after the test."""

    def __init__(self, *, persist: bool = False, **env: str) -> None:
        self.server = RedisServer(persist=persist).start()
        self.url = self.server.url
        self.env = {"RUNCAST_AGENTS": AGENTS, **env}
        self.workers: list[Process] = []
        self.dead: list[Process] = []
        self.api: Process | None = None
        self.api_url = ""
        self.http = httpx.Client(timeout=30)
        self.admin = redis.Redis.from_url(self.url, socket_timeout=5)
        self._names = 0
        self.busy = 0  # 503 answers met by submit_batch(retry_503=True)

    # -- processes --------------------------------------------------------------------------
    def spawn_worker(self, concurrency: int = 3) -> Process:
        """Start a worker without waiting for it to be ready."""
        self._names += 1
        args = [str(BIN / "celery"), "-A", "tasks", "worker", "-E", "-l", "info",
                "-c", str(concurrency), "-n", f"f{self._names}@%h", "--without-gossip",
                "--without-mingle"]
        worker = Process(args, service_env(self.url, **self.env), f"worker-f{self._names}")
        self.workers.append(worker.start())
        return worker

    @staticmethod
    def ready(worker: Process) -> bool:
        return " ready." in worker.output()

    def start_workers(self, n: int = 2, concurrency: int = 3) -> list[Process]:
        started = [self.spawn_worker(concurrency) for _ in range(n)]
        for worker in started:
            worker.wait_for_output(" ready.", timeout=60)
        return started

    def kill_worker(self, worker: Process) -> None:
        worker.kill(signal.SIGKILL)
        self.workers.remove(worker)
        self.dead.append(worker)

    def start_api(self) -> str:
        self.api, self.api_url = start_api(self.url, **self.env)
        return self.api_url

    def close(self) -> None:
        for process in [*self.workers, *self.dead, *([self.api] if self.api else [])]:
            try:
                process.kill(signal.SIGKILL)
            finally:
                if hasattr(process, "log"):
                    process.log.close()
        self.http.close()
        self.admin.close()
        self.server.cleanup()

    # -- runs over HTTP ---------------------------------------------------------------------
    def submit(self, agent: str, input: dict | None = None, **body: Any) -> str:
        response = self.http.post(f"{self.api_url}/runs",
                                  json={"agent": agent, "input": input or {}, **body})
        assert response.status_code == 202, response.text
        return response.json()["run_id"]

    def submit_batch(self, runs: list[dict], retry_503: bool = False) -> list[str]:
        """POST /batches; with `retry_503`, like a client that tries again when the API says
        the store was unreachable (a killed connection), counting those answers in `self.busy`."""
        while True:
            response = self.http.post(f"{self.api_url}/batches", json={"runs": runs})
            if response.status_code == 503 and retry_503:
                assert response.json()["detail"], response.text
                self.busy += 1
                time.sleep(0.1)
                continue
            assert response.status_code == 202, response.text
            return response.json()["run_ids"]

    def run(self, run_id: str) -> dict:
        response = self.http.get(f"{self.api_url}/runs/{run_id}")
        assert response.status_code == 200, response.text
        return response.json()

    def events(self, run_id: str, limit: int = 1000) -> list[dict]:
        """The whole log, page by page, through GET /runs/{id}/events."""
        out: list[dict] = []
        after = 0
        while True:
            response = self.http.get(f"{self.api_url}/runs/{run_id}/events",
                                     params={"after": after, "limit": limit})
            assert response.status_code == 200, response.text
            page = response.json()
            out += page["events"]
            if not page["events"] or page["done"]:
                return out
            after = page["next_after"]

    def describe(self, run_id: str) -> dict:
        """What a stuck run looks like: status, attempt, its last events, its broker message."""
        run = self.run(run_id)
        tail = [(e["seq"], e["type"], e["data"].get("worker")) for e in self.events(run_id)[-3:]]
        unacked = [k for k, v in self.admin.hgetall("unacked").items() if run_id.encode() in v]
        queued = any(run_id.encode() in m for m in self.admin.lrange("default", 0, -1))
        return {"status": run["status"], "attempt": run["attempt"], "tail": tail,
                "unacked": len(unacked), "in_queue": queued}

    def join(self, followers: list[Follower], timeout: float) -> None:
        """Wait for the followers; a failure says how its run stands."""
        deadline = time.monotonic() + timeout
        for follower in followers:
            try:
                follower.join(max(deadline - time.monotonic(), 1))
            except AssertionError as exc:
                raise AssertionError(f"{exc}; run: {self.describe(follower.run_id)}") from exc

    def wait_terminal(self, run_ids: list[str], timeout: float) -> dict[str, dict]:
        """Poll until every run is terminal; fail (naming the stragglers) after `timeout`."""
        deadline = time.monotonic() + timeout
        done: dict[str, dict] = {}
        pending = list(run_ids)
        while pending:
            still = []
            for run_id in pending:
                run = self.run(run_id)
                if run["status"] in TERMINAL_STATUSES:
                    done[run_id] = run
                else:
                    still.append(run_id)
            pending = still
            if pending and time.monotonic() > deadline:
                sample = {r: self.describe(r) for r in pending[:5]}
                raise AssertionError(f"{len(pending)} runs not terminal after {timeout} s: "
                                     f"{sample}")
            if pending:
                time.sleep(0.25)
        return done


# -- SSE followers -------------------------------------------------------------------------------
@dataclass
class Follower:
    """Follows one run's /stream; on a drop reconnects with Last-Event-ID. Records every frame
    received, so a duplicate or a gap shows."""

    base_url: str
    run_id: str
    give_up_s: float = 90.0
    # cut each connection after a random number of bytes in this range (None: never)
    cut_bytes: tuple[int, int] | None = None
    seed: int = 0
    frames: list[SSEFrame] = field(default_factory=list)
    connections: int = 0
    drops: int = 0  # connections that ended (or were cut) before the terminal event
    statuses: list[int] = field(default_factory=list)  # non-200 answers met on the way
    error: BaseException | None = None
    done: bool = False
    finished_at: float | None = None

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)
        self._thread = threading.Thread(target=self._main, daemon=True,
                                         name=f"follow-{self.run_id[:8]}")

    def start(self) -> Follower:
        self._thread.start()
        return self

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)
        assert not self._thread.is_alive(), f"follower of {self.run_id} still running"
        if self.error is not None:
            raise self.error

    @property
    def last_seq(self) -> int:
        return int(self.frames[-1].id) if self.frames else 0

    def _main(self) -> None:
        try:
            self._follow()
        except BaseException as exc:  # noqa: BLE001 - reported by join()
            self.error = exc

    def _follow(self) -> None:
        url = f"{self.base_url}/runs/{self.run_id}/stream"
        failing_since: float | None = None
        stuck = 0  # cut connections in a row that completed no frame (a frame bigger than a cut)
        with httpx.Client(timeout=httpx.Timeout(10, read=30)) as http:
            while not self.done:
                headers = {"Accept": "text/event-stream"}
                if self.frames:
                    headers["Last-Event-ID"] = self.frames[-1].id
                limit = None
                if self.cut_bytes:
                    limit = self._rng.randint(*self.cut_bytes) << min(stuck, 20)
                before = len(self.frames)
                try:
                    self._connect(http, url, headers, limit)
                except (httpx.HTTPError, OSError):
                    pass
                if self.done:
                    break
                self.drops += 1
                now = time.monotonic()
                stuck = 0 if len(self.frames) > before else stuck + 1
                if not stuck:
                    failing_since = None  # progress: not failing
                failing_since = failing_since or now
                if now - failing_since > self.give_up_s:
                    raise AssertionError(
                        f"stream of {self.run_id} made no progress for {self.give_up_s} s: "
                        f"{self.connections} connections, {self.drops} drops, last seq "
                        f"{self.last_seq}, answers {self.statuses[-5:]}")
                if limit is None:
                    time.sleep(0.1)

    def _connect(self, http: httpx.Client, url: str, headers: dict, limit: int | None) -> None:
        self.connections += 1
        with http.stream("GET", url, headers=headers) as response:
            if response.status_code != 200:
                self.statuses.append(response.status_code)
                response.read()
                assert response.status_code >= 500, (response.status_code, response.text)
                return
            parser = SSEParser()
            received = 0
            for chunk in response.iter_raw():
                if limit is not None and received + len(chunk) > limit:
                    chunk = chunk[: max(limit - received, 0)]  # cut mid-frame, even mid-line
                    self._feed(parser, chunk)
                    return
                received += len(chunk)
                self._feed(parser, chunk)
                if self.done:
                    return

    def _feed(self, parser: SSEParser, chunk: bytes) -> None:
        for frame in parser.feed(chunk):
            self.frames.append(frame)
            if frame.event in TERMINAL_TYPES:
                self.done = True
                self.finished_at = time.monotonic()

    def assert_exactly(self, log: list[dict]) -> None:
        """Every event of the log arrived exactly once, in order, byte for byte."""
        got = [int(f.id) for f in self.frames]
        want = [e["seq"] for e in log]
        if got != want:
            dupes = len(got) - len(set(got))
            missing = sorted(set(want) - set(got))[:20]
            raise AssertionError(f"stream of {self.run_id}: {len(got)} frames for {len(want)} "
                                 f"events, {dupes} duplicates, missing {missing}")
        for frame, event in zip(self.frames, log, strict=True):
            assert frame.event == event["type"]
            assert json.loads(frame.data) == event, (frame.data, event)
