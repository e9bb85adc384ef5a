"""What one HTTP request costs on runcast's stack: the floor beside runcast's own routes.

    .venv/bin/python -m benchmarks.http_floor [REQUESTS]

Context for the HTTP path goal (benchmarks.http_path), not a goal of its own. Starts its own
redis-server and three uvicorn processes: a bare ASGI app (uvicorn and h11 alone), FastAPI with
one empty async route (benchmarks.floor_app) and runcast's API (no worker: submitted runs stay
queued). One caller sends REQUESTS requests in turn on a keep-alive connection, once with httpx
(what the benchmarks and runcast's client use) and once with the standard library's
http.client, and the server's and the caller's CPU per request are read from /proc. Requests:
  - floor: `GET /ping` on each floor app;
  - runcast: `POST /runs` (a no-op run), `GET /runs/{id}`, `GET /runs/{id}/wait?timeout=0`
    (what waiting for an ended run costs: one read).
Medians over ROUNDS rounds.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from collections.abc import Callable

from benchmarks.http_path import RUNCAST, LeanClient
from benchmarks.runs import cpu_seconds
from tests.services import http_client

REQUESTS = 2000
ROUNDS = 3
RUN_BODY = RUNCAST.body  # the HTTP path's no-op run


class HttpxClient:
    def __init__(self, url: str) -> None:
        self.client = http_client(url)

    def request(self, method: str, path: str, body: dict | None = None) -> bytes:
        response = self.client.request(method, path, json=body)
        response.raise_for_status()
        return response.content

    def close(self) -> None:
        self.client.close()


def per_request(server_pid: int, n: int, send: Callable[[int], object]) -> tuple[float, float]:
    """(server, caller) CPU milliseconds per request over `n` requests."""
    server, caller = cpu_seconds(server_pid), time.process_time()
    for i in range(n):
        send(i)
    return ((cpu_seconds(server_pid) - server) / n * 1000,
            (time.process_time() - caller) / n * 1000)


def one_round(make, raw, empty, api, n: int) -> list[tuple[str, tuple[float, float]]]:
    """Each case's (server, caller) CPU per request, with clients made by `make`; `raw`,
    `empty`, `api`: (process, url) of the bare ASGI app, the empty FastAPI route, runcast."""
    raw_c, empty_c, api_c = clients = [make(url) for _, url in (raw, empty, api)]
    try:
        ids = [json.loads(api_c.request("POST", "/runs", RUN_BODY))["run_id"] for _ in range(100)]
        cases = [
            ("bare ASGI app, GET /ping", raw, lambda i: raw_c.request("GET", "/ping")),
            ("FastAPI empty route, GET /ping", empty, lambda i: empty_c.request("GET", "/ping")),
            ("runcast POST /runs", api, lambda i: api_c.request("POST", "/runs", RUN_BODY)),
            ("runcast GET /runs/{id}", api,
             lambda i: api_c.request("GET", f"/runs/{ids[i % 100]}")),
            ("runcast GET /runs/{id}/wait?timeout=0", api,
             lambda i: api_c.request("GET", f"/runs/{ids[i % 100]}/wait?timeout=0")),
        ]
        return [(name, per_request(process.proc.pid, n, send))
                for name, (process, _), send in cases]
    finally:
        for client in clients:
            client.close()


def main(n: int = REQUESTS, rounds: int = ROUNDS) -> dict:
    from benchmarks.bare import AGENT_MODULES, set_up_sides
    from tests.redis_server import RedisServer
    from tests.services import start_api

    server = RedisServer().start()
    apis = []
    figures: dict[str, list[tuple[float, float]]] = {}
    try:
        set_up_sides(server.url)
        raw, raw_url = start_api(server.url, app="benchmarks.floor_app:raw", ready_path="/ping")
        apis.append(raw)
        empty, empty_url = start_api(server.url, app="benchmarks.floor_app:app",
                                     ready_path="/ping")
        apis.append(empty)
        api, url = start_api(server.url, RUNCAST_AGENTS=AGENT_MODULES)
        apis.append(api)
        for _ in range(rounds):
            for client_name, make in (("httpx", HttpxClient), ("http.client", LeanClient)):
                for name, cpu in one_round(make, (raw, raw_url), (empty, empty_url), (api, url),
                                           n):
                    figures.setdefault(f"{name} [{client_name}]", []).append(cpu)
    finally:
        for process in apis:
            process.stop()
        server.cleanup()

    result = {
        name: {"server_cpu_ms": round(statistics.median(s for s, _ in pairs), 3),
               "caller_cpu_ms": round(statistics.median(c for _, c in pairs), 3)}
        for name, pairs in figures.items()
    }
    print(f"CPU per request, medians of {rounds} rounds of {n} requests (server / caller):")
    for name, cpu in result.items():
        print(f"  {name}: {cpu['server_cpu_ms']:.3f} ms / {cpu['caller_cpu_ms']:.3f} ms")
    return {"requests": n, "rounds": rounds, "load_average": os.getloadavg(), "cpu": result}


if __name__ == "__main__":
    print(json.dumps(main(*[int(a) for a in sys.argv[1:2]]), indent=2))
