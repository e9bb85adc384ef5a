"""The HTTP path: `POST /runs` + `GET /runs/{id}/wait` beside bare Celery on the same worker.

    .venv/bin/python -m benchmarks.http_path [ROUNDS]

Starts its own redis-server, ONE Celery worker (`-c 4`, loading benchmarks.bare) and ONE API
process (uvicorn `api.app:app`), then alternates the sides round by round:
  - round trips: N sequential no-ops from one caller, each submitted and waited for (p50);
    runcast: `POST /runs {"agent": "bench_noop"}` + `GET /runs/{id}/wait` (httpx, keep-alive);
    bare:    `noop.apply_async(args=[{}])` + `.get()` (Redis result backend);
  - throughput: M no-ops submitted, then every one waited for, by CALLERS threads on each side
    (runcast: an httpx.Client, so a keep-alive connection, per thread; bare: Celery's client).
A third side, for context (not the goal's baseline): bare Celery behind a minimal FastAPI app
(benchmarks.bare_http, `POST /tasks` + `GET /tasks/{id}/wait`, under the same uvicorn), called
as runcast's API is; it prices the HTTP hop itself. A fourth, for context too: runcast's side
again, its callers on the standard library's http.client (LeanClient) instead of httpx. On one
2-core machine the callers share the CPU with the API, the worker and Redis, and httpx costs a
caller about four times what http.client does per request (benchmarks.http_floor): this side
shows what runcast's server side does when its load generator weighs less. Each side goes
first in turn.
Figures are medians over rounds of the per-round pairs. Goals: runcast throughput >= 0.6 x bare;
runcast p50 within 3 ms of bare.
Where the time goes: on a two-core machine the throughput phase is CPU-bound, so each side's CPU
per run is reported by process (this process's callers, the API, the worker with its pool, Redis).
"""

from __future__ import annotations

import http.client
import json
import os
import statistics
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, NamedTuple
from urllib.parse import urlencode

import httpx

from tests.services import http_client

ROUNDS = 4
ROUND_TRIPS = 150
THROUGHPUT_RUNS = 400
CALLERS = 8
WARM_UP = 50
WORKER_CONCURRENCY = 4
THROUGHPUT_TARGET = 0.6
P50_TARGET_MS = 3.0


class Api(NamedTuple):
    """How a side's HTTP API is called: submit, then wait for the result."""

    submit_path: str
    body: dict | None
    id_field: str
    wait_path: str  # with {} for the id
    ok: Callable[[dict], bool]


RUNCAST = Api("/runs", {"agent": "bench_noop", "input": {}}, "run_id", "/runs/{}/wait",
              lambda done: done["status"] == "succeeded")
BARE_HTTP = Api("/tasks", None, "task_id", "/tasks/{}/wait",  # benchmarks.bare_http
                lambda done: done["state"] == "SUCCESS")


class LeanClient:
    """The standard library's http.client (one keep-alive connection) behind the part of
    httpx.Client's interface the benchmarks use: `request`, `post` and `get`."""

    def __init__(self, url: str) -> None:
        host, port = url.removeprefix("http://").rsplit(":", 1)
        self.conn = http.client.HTTPConnection(host, int(port), timeout=60)

    def request(self, method: str, path: str, body: Any = None) -> bytes:
        headers = {"content-type": "application/json"} if body is not None else {}
        self.conn.request(method, path, json.dumps(body) if body is not None else None, headers)
        response = self.conn.getresponse()
        data = response.read()
        if response.status >= 400:
            raise AssertionError(f"{method} {path}: {response.status} {data[:200]!r}")
        return data

    def post(self, path: str, json: Any = None) -> _Reply:
        return _Reply(self.request("POST", path, json))

    def get(self, path: str, params: dict | None = None) -> _Reply:
        return _Reply(self.request("GET", f"{path}?{urlencode(params)}" if params else path))

    def close(self) -> None:
        self.conn.close()


class _Reply(NamedTuple):
    content: bytes

    def json(self) -> Any:
        return json.loads(self.content)


def _submit(http: httpx.Client, api: Api) -> str:
    return http.post(api.submit_path, json=api.body).json()[api.id_field]


def _wait(http: httpx.Client, api: Api, run_id: str, timeout: float) -> None:
    done = http.get(api.wait_path.format(run_id), params={"timeout": timeout}).json()
    if not api.ok(done):
        raise AssertionError(f"a run did not succeed: {done}")


def http_round_trips(url: str, n: int, api: Api, client=http_client) -> list[float]:
    times = []
    http = client(url)
    try:
        for _ in range(n):
            start = time.perf_counter()
            _wait(http, api, _submit(http, api), 30)
            times.append(time.perf_counter() - start)
    finally:
        http.close()
    return times


def bare_round_trips(noop, n: int) -> list[float]:
    times = []
    for _ in range(n):
        start = time.perf_counter()
        noop.apply_async(args=[{}]).get(timeout=30)
        times.append(time.perf_counter() - start)
    return times


def http_throughput(url: str, m: int, api: Api, client=http_client) -> float:
    """As bare_throughput does it: CALLERS threads submit the M runs, then wait for each; a
    keep-alive connection per thread (`client(url)`: httpx's by default)."""
    local = threading.local()
    clients: list[httpx.Client] = []

    def http() -> httpx.Client:
        if not hasattr(local, "client"):
            local.client = client(url)
            clients.append(local.client)
        return local.client

    start = time.perf_counter()
    try:
        with ThreadPoolExecutor(CALLERS) as pool:
            ids = list(pool.map(lambda _: _submit(http(), api), range(m)))
            list(pool.map(lambda run_id: _wait(http(), api, run_id, 60), ids))
        return m / (time.perf_counter() - start)
    finally:
        for open_client in clients:
            open_client.close()


def bare_throughput(noop, m: int) -> float:
    start = time.perf_counter()
    with ThreadPoolExecutor(CALLERS) as pool:
        results = list(pool.map(lambda _: noop.apply_async(args=[{}]), range(m)))
        list(pool.map(lambda result: result.get(timeout=60), results))
    return m / (time.perf_counter() - start)


def main(rounds: int = ROUNDS, n: int = ROUND_TRIPS, m: int = THROUGHPUT_RUNS) -> dict:
    from benchmarks.bare import AGENT_MODULES, set_up_sides
    from benchmarks.runs import CpuMeter
    from tests.redis_server import RedisServer
    from tests.services import start_api, start_worker

    server = RedisServer().start()
    worker = api = bare_api = None
    try:
        noop = set_up_sides(server.url).tasks["bench.noop"]

        worker = start_worker(server.url, name="bench-http", concurrency=WORKER_CONCURRENCY,
                              RUNCAST_AGENTS=AGENT_MODULES)
        api, url = start_api(server.url, RUNCAST_AGENTS=AGENT_MODULES)
        bare_api, bare_url = start_api(server.url, app="benchmarks.bare_http:app",
                                       ready_path="/docs")
        meter = CpuMeter(worker.proc.pid, server.process.pid, api=api.proc.pid,
                         bare_api=bare_api.proc.pid)

        def metered(name: str, throughput: Callable[[], float], r: dict[str, float]) -> None:
            before = meter.by_process()
            r[f"{name}_per_s"] = throughput()
            after = meter.by_process()
            for process, used in after.items():
                r[f"{name}_cpu_ms:{process}"] = (used - before[process]) / m * 1000

        http_round_trips(url, WARM_UP, RUNCAST)
        http_round_trips(bare_url, WARM_UP, BARE_HTTP)
        bare_round_trips(noop, WARM_UP)
        per_round = []
        for i in range(rounds):
            sides = [("runcast", lambda: http_round_trips(url, n, RUNCAST),
                      lambda: http_throughput(url, m, RUNCAST)),
                     ("bare", lambda: bare_round_trips(noop, n),
                      lambda: bare_throughput(noop, m)),
                     ("bare_http", lambda: http_round_trips(bare_url, n, BARE_HTTP),
                      lambda: http_throughput(bare_url, m, BARE_HTTP)),
                     ("runcast_lean", lambda: http_round_trips(url, n, RUNCAST, LeanClient),
                      lambda: http_throughput(url, m, RUNCAST, LeanClient))]
            sides = sides[i % len(sides):] + sides[:i % len(sides)]  # each side first in turn
            r: dict[str, float] = {}
            for name, trips, _ in sides:
                r[f"{name}_p50_ms"] = statistics.median(trips()) * 1000
            for name, _, throughput in sides:
                metered(name, throughput, r)
            per_round.append(r)
            print(f"round {i + 1}/{rounds}: p50 runcast {r['runcast_p50_ms']:.2f} ms, bare "
                  f"{r['bare_p50_ms']:.2f} ms, bare over HTTP {r['bare_http_p50_ms']:.2f} ms; "
                  f"throughput runcast {r['runcast_per_s']:.0f}/s, bare {r['bare_per_s']:.0f}/s, "
                  f"bare over HTTP {r['bare_http_per_s']:.0f}/s, runcast with http.client "
                  f"callers {r['runcast_lean_per_s']:.0f}/s (p50 {r['runcast_lean_p50_ms']:.2f} "
                  f"ms); load {os.getloadavg()[0]:.1f}",
                  flush=True)
    finally:
        for process in (api, bare_api, worker):
            if process is not None:
                process.stop()
        server.cleanup()

    def med(key: str) -> float:
        return round(statistics.median(r[key] for r in per_round), 3)

    cpu = {side: {key.split(":")[1]: med(key) for key in per_round[0]
                  if key.startswith(f"{side}_cpu_ms:") and med(key) >= 0.005}
           for side in ("runcast", "bare", "bare_http", "runcast_lean")}

    def against(side: str, base: str) -> tuple[float, float]:
        """Medians over rounds: side's throughput / base's, side's p50 less base's."""
        return (statistics.median(r[f"{side}_per_s"] / r[f"{base}_per_s"] for r in per_round),
                statistics.median(r[f"{side}_p50_ms"] - r[f"{base}_p50_ms"] for r in per_round))

    ratio, delta = against("runcast", "bare")
    http_ratio, http_delta = against("runcast", "bare_http")
    lean_ratio, lean_delta = against("runcast_lean", "bare")
    result = {
        "worker": f"RUNCAST_AGENTS={AGENT_MODULES} celery -A tasks worker -c "
                  f"{WORKER_CONCURRENCY}; one uvicorn api.app:app",
        "rounds": rounds, "round_trips": n, "throughput_runs": m, "callers": CALLERS,
        "runcast_throughput_per_s": med("runcast_per_s"), "bare_throughput_per_s":
        med("bare_per_s"), "throughput_ratio": round(ratio, 3),
        "runcast_p50_ms": med("runcast_p50_ms"), "bare_p50_ms": med("bare_p50_ms"),
        "p50_delta_ms": round(delta, 3),
        "bare_http_throughput_per_s": med("bare_http_per_s"),
        "bare_http_p50_ms": med("bare_http_p50_ms"),
        "throughput_ratio_vs_bare_http": round(http_ratio, 3),
        "runcast_lean_callers_throughput_per_s": med("runcast_lean_per_s"),
        "runcast_lean_callers_p50_ms": med("runcast_lean_p50_ms"),
        "throughput_ratio_lean_callers": round(lean_ratio, 3),
        "p50_delta_lean_callers_ms": round(lean_delta, 3),
        "cpu_ms_per_run": cpu,
        "p50_delta_vs_bare_http_ms": round(http_delta, 3),
        "load_average": os.getloadavg(),
        "throughput_target_met": ratio >= THROUGHPUT_TARGET,
        "p50_target_met": delta <= P50_TARGET_MS,
    }
    print(f"HTTP path: throughput {ratio:.2f}x bare (goal >= {THROUGHPUT_TARGET}); p50 runcast "
          f"{result['runcast_p50_ms']} ms vs bare {result['bare_p50_ms']} ms (+{delta:.2f} ms, "
          f"goal <= {P50_TARGET_MS}); beside bare Celery behind FastAPI: throughput "
          f"{http_ratio:.2f}x, p50 {http_delta:+.2f} ms; runcast with http.client callers "
          f"(context): {lean_ratio:.2f}x bare, p50 {lean_delta:+.2f} ms", flush=True)
    for side, used in cpu.items():
        print(f"  CPU per run, {side}: {sum(used.values()):.2f} ms ("
              + ", ".join(f"{process} {ms:.2f}" for process, ms in used.items()) + ")", flush=True)
    return result


if __name__ == "__main__":
    print(json.dumps(main(int(sys.argv[1]) if len(sys.argv) > 1 else ROUNDS), indent=2))
