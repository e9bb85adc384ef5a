"""SSE fan-out through the real API: many subscribers on one run, memory, Redis connections,
latency beside a raw Redis PUBLISH baseline.

    .venv/bin/python -m benchmarks.sse [SUBSCRIBERS] [WORDS]

Starts its own redis-server, ONE Celery worker (`-c 1`) and ONE API process (uvicorn
`api.app:app`). For each phase (10 subscribers, then SUBSCRIBERS, default 1,000):
  - a `sleep` run occupies the worker, so the `tokens` run (WORDS words, default 1,000, no
    delay) submitted next stays queued;
  - the subscribers (one httpx.AsyncClient in this process, a connection each) open
    GET /runs/{id}/stream and wait; then the `sleep` run is cancelled and the `tokens` run starts;
  - each subscriber must receive the complete log: seq 1..WORDS+2 in order, no gap, no
    duplicate, and the server ends the stream after the terminal event. A subscriber whose
    connection drops (the server closes a stream its client has not read for 30 s) resumes with
    Last-Event-ID, as a browser's EventSource does; drops are counted and reported.
Reported per phase: events delivered per second (frames received by all subscribers over the
time from the first to the last frame) and the API's CPU per frame; the API process's RSS
(VmRSS from /proc) idle, with the subscribers attached, and at the end; the Redis connections
the API process holds (its TCP sockets to the Redis port, matched in CLIENT LIST), idle, attached,
and the most seen while delivering, pub/sub ones apart. The contract: one pub/sub connection per
API process, and no connection per subscriber.
Then latency at a light rate (50 events/s, 300 events): the time from emit (the envelope's `ts`,
set in the worker) to the frame arriving at an SSE client, p50/p99, beside a raw Redis PUBLISH to a
redis-py subscriber at the same rate in the same run.

The subscribers, the API, the worker and Redis share the machine: on a small one the figures are
bounded by the CPU the subscribers' process takes, not by the API alone (see api_cpu_us_per_frame).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import statistics
import sys
import threading
import time
from datetime import datetime
from typing import Self

import httpx
import redis

from tests.redis_server import RedisServer
from tests.services import start_api, start_worker

SUBSCRIBERS = 1000
WORDS = 1000
SMALL_PHASE = 10
LATENCY_EVENTS = 300
LATENCY_DELAY_S = 0.02  # 50 events/s
PHASE_TIMEOUT_S = 600
CONNECTION_GROWTH = 64  # most Redis connections the API may add from 10 to 1,000 subscribers

_EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(?:Error|Exception|Timeout)\b.*$", re.MULTILINE)
_ID = re.compile(rb"^id: (\d+)\r?$", re.MULTILINE)  # sse-starlette ends lines with CRLF


def percentile(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def cpu_s(pid: int) -> float:
    """User + system CPU seconds the process used so far (/proc/<pid>/stat)."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _socket_inodes(pid: int) -> set[str]:
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    return inodes


def _local_ports_to(pid: int, remote_port: int) -> set[int]:
    """Local ports of the process's TCP connections to `remote_port` (from /proc/net/tcp*)."""
    inodes = _socket_inodes(pid)
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as file:
                lines = file.read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            local, remote, inode = fields[1], fields[2], fields[9]
            if inode in inodes and int(remote.rsplit(":", 1)[1], 16) == remote_port:
                ports.add(int(local.rsplit(":", 1)[1], 16))
    return ports


def api_redis_connections(pid: int, admin: redis.Redis, redis_port: int) -> dict[str, int]:
    """The API's connections as Redis sees them: CLIENT LIST entries whose peer port is one of
    the API process's sockets to Redis; `pubsub` counts those in subscriber mode."""
    ports = _local_ports_to(pid, redis_port)
    total = pubsub = 0
    for client in admin.client_list():
        if int(client["addr"].rsplit(":", 1)[1]) in ports:
            total += 1
            if "P" in client.get("flags", "") or int(client.get("sub", 0) or 0) > 0:
                pubsub += 1
    return {"total": total, "pubsub": pubsub}


class Sampler:
    """Samples the API's Redis connections every 100 ms in a thread; keeps the maximum."""

    def __init__(self, pid: int, admin: redis.Redis, port: int) -> None:
        self.pid, self.admin, self.port = pid, admin, port
        self.max_total = self.max_pubsub = 0
        self.stop_flag = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop_flag.is_set():
            now = api_redis_connections(self.pid, self.admin, self.port)
            self.max_total = max(self.max_total, now["total"])
            self.max_pubsub = max(self.max_pubsub, now["pubsub"])
            self.stop_flag.wait(0.1)

    def __enter__(self) -> Self:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_flag.set()
        self.thread.join()


def _complete_frames_end(buffer: bytes) -> int:
    """Where the last complete frame of `buffer` ends (frames end with a blank line)."""
    lf, crlf = buffer.rfind(b"\n\n"), buffer.rfind(b"\n\r\n")
    return max(lf + 2 if lf >= 0 else 0, crlf + 3 if crlf >= 0 else 0)


async def _subscriber(client: httpx.AsyncClient, run_id: str, connected: list[int],
                      first_last: list[float], drops: list[int],
                      drop_reasons: dict[str, int]) -> list[int]:
    """Follows the stream like a browser's EventSource: when the connection drops before the
    stream's end, it reconnects with Last-Event-ID (each drop is counted)."""
    seqs: list[int] = []
    while True:
        headers = {"Last-Event-ID": str(seqs[-1])} if seqs else {}
        buffer = b""
        try:
            async with client.stream("GET", f"/runs/{run_id}/stream",
                                     headers=headers) as response:
                if response.status_code != 200:
                    raise RuntimeError(f"stream answered {response.status_code}")
                if not headers:
                    connected[0] += 1
                async for chunk in response.aiter_raw():
                    now = time.perf_counter()
                    if not first_last[0]:
                        first_last[0] = now
                    first_last[1] = now
                    buffer += chunk
                    end = _complete_frames_end(buffer)
                    if end:
                        seqs.extend(int(m) for m in _ID.findall(buffer, 0, end))
                        buffer = buffer[end:]
            return seqs  # the server ended the stream: after the terminal event
        except (httpx.RemoteProtocolError, httpx.ReadError) as exc:
            drops[0] += 1
            reason = f"{type(exc).__name__}: {exc}"[:80]
            drop_reasons[reason] = drop_reasons.get(reason, 0) + 1


async def fanout_phase(url: str, n: int, words: int, api_pid: int, admin: redis.Redis,
                       redis_port: int) -> dict:
    text = " ".join(f"w{i}" for i in range(words))
    limits = httpx.Limits(max_connections=n + 10, max_keepalive_connections=n + 10)
    timeout = httpx.Timeout(PHASE_TIMEOUT_S, connect=60, pool=120)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=timeout) as client:
        gate = (await client.post("/runs", json={"agent": "sleep",
                                                 "input": {"seconds": 600}})).json()["run_id"]
        run = (await client.post("/runs", json={"agent": "tokens",
                                                "input": {"text": text}})).json()["run_id"]
        while (await client.get(f"/runs/{gate}")).json()["status"] != "running":
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)
        idle = {"rss_mb": rss_mb(api_pid),
                "redis": api_redis_connections(api_pid, admin, redis_port)}

        connected, first_last, drops, drop_reasons = [0], [0.0, 0.0], [0], {}
        tasks = [asyncio.create_task(_subscriber(client, run, connected, first_last, drops,
                                                 drop_reasons))
                 for _ in range(n)]
        attach_started = time.perf_counter()
        while connected[0] < n:
            if any(t.done() for t in tasks):
                for t in tasks:
                    if t.done():
                        t.result()  # raises what went wrong
            if time.perf_counter() - attach_started > 120:
                raise TimeoutError(f"only {connected[0]} of {n} subscribers connected")
            await asyncio.sleep(0.05)
        attach_s = time.perf_counter() - attach_started
        await asyncio.sleep(1.0)  # every stream subscribed on the server
        assert (await client.get(f"/runs/{run}")).json()["status"] == "queued"
        attached = {"rss_mb": rss_mb(api_pid),
                    "redis": api_redis_connections(api_pid, admin, redis_port)}

        with Sampler(api_pid, admin, redis_port) as sampler:
            cpu_before = cpu_s(api_pid)
            released = time.perf_counter()
            await client.post(f"/runs/{gate}/cancel", json={"reason": "benchmark start"})
            results = await asyncio.wait_for(asyncio.gather(*tasks), PHASE_TIMEOUT_S)
            finished = time.perf_counter()
            api_cpu = cpu_s(api_pid) - cpu_before
        end = {"rss_mb": rss_mb(api_pid),
               "redis": api_redis_connections(api_pid, admin, redis_port)}
        final = (await client.get(f"/runs/{run}")).json()

    expected = list(range(1, words + 3))
    complete = sum(seqs == expected for seqs in results)
    frames = sum(len(seqs) for seqs in results)
    window = first_last[1] - first_last[0]
    return {
        "subscribers": n,
        "events_per_run": words + 2,
        "complete_gap_free_logs": complete,
        "dropped_connections_resumed": drops[0],
        "drop_reasons": drop_reasons,
        "run_status": final["status"],
        "frames_delivered": frames,
        "delivery_window_s": round(window, 3),
        "release_to_last_frame_s": round(first_last[1] - released, 3),
        "events_per_s": round(frames / window) if window > 0 else None,
        "api_cpu_s_while_delivering": round(api_cpu, 2),
        "api_cpu_us_per_frame": round(api_cpu / frames * 1e6, 1) if frames else None,
        "attach_s": round(attach_s, 3),
        "total_s": round(finished - released, 3),
        "api_rss_mb": {"idle": round(idle["rss_mb"], 1), "attached": round(attached["rss_mb"], 1),
                       "end": round(end["rss_mb"], 1)},
        "api_redis_connections": {
            "idle": idle["redis"]["total"], "attached": attached["redis"]["total"],
            "max_while_delivering": sampler.max_total, "end": end["redis"]["total"],
            "pubsub_attached": attached["redis"]["pubsub"],
            "pubsub_max_while_delivering": sampler.max_pubsub,
        },
    }


def _ts(value: str) -> float:
    return datetime.fromisoformat(value).timestamp()


async def sse_latency(url: str, events: int, delay: float) -> list[float]:
    """Emit (the envelope's ts, wall clock in the worker) to arrival at an SSE client, in ms."""
    text = " ".join(f"w{i}" for i in range(events))
    latencies: list[float] = []
    async with httpx.AsyncClient(base_url=url, timeout=120) as client:
        run = (await client.post("/runs", json={
            "agent": "tokens", "input": {"text": text, "delay": delay}})).json()["run_id"]
        buffer = ""
        async with client.stream("GET", f"/runs/{run}/stream") as response:
            async for chunk in response.aiter_text():
                now = time.time()
                buffer = (buffer + chunk).replace("\r\n", "\n")
                while "\n\n" in buffer:
                    block, buffer = buffer.split("\n\n", 1)
                    for line in block.split("\n"):
                        if line.startswith("data: "):
                            envelope = json.loads(line[6:])
                            if envelope["type"] == "token" and envelope["seq"] > 2:
                                latencies.append((now - _ts(envelope["ts"])) * 1000)
    return latencies


def publish_latency(redis_url: str, events: int, delay: float) -> list[float]:
    """Baseline: PUBLISH of a timestamped message to a redis-py subscriber, same rate, in ms."""
    subscriber = redis.Redis.from_url(redis_url)
    pubsub = subscriber.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe("bench:latency")
    publisher = redis.Redis.from_url(redis_url)
    latencies: list[float] = []

    def publish() -> None:
        for i in range(events):
            time.sleep(delay)
            publisher.publish("bench:latency", json.dumps({"i": i, "t": time.time()}))

    thread = threading.Thread(target=publish)
    thread.start()
    deadline = time.monotonic() + events * delay + 30
    while len(latencies) < events and time.monotonic() < deadline:
        message = pubsub.get_message(timeout=1.0)
        if message is not None:
            latencies.append((time.time() - json.loads(message["data"])["t"]) * 1000)
    thread.join()
    pubsub.close()
    subscriber.close()
    publisher.close()
    return latencies[2:]


def _summary(latencies: list[float]) -> dict:
    return {"n": len(latencies), "p50_ms": round(percentile(latencies, 0.5), 3),
            "p99_ms": round(percentile(latencies, 0.99), 3),
            "mean_ms": round(statistics.fmean(latencies), 3)}


def main(subscribers: int = SUBSCRIBERS, words: int = WORDS) -> dict:
    server = RedisServer().start()
    worker = api = None
    admin = redis.Redis.from_url(server.url)
    try:
        worker = start_worker(server.url, name="bench-sse", concurrency=1)
        api, url = start_api(server.url)
        api_pid = api.proc.pid
        # warm up: one run through the whole path
        with httpx.Client(base_url=url, timeout=60) as http:
            warm = http.post("/runs", json={"agent": "tokens", "input": {"text": "a b"}}).json()
            http.get(f"/runs/{warm['run_id']}/stream").read()

        result: dict = {"subscribers": subscribers, "words": words, "worker_concurrency": 1,
                        "cpus": os.cpu_count()}
        phases = []
        for n in (SMALL_PHASE, subscribers):
            print(f"fan-out: {n} subscribers on one tokens run of {words} words ...", flush=True)
            log_start = len(api.output())
            phase = asyncio.run(fanout_phase(url, n, words, api_pid, admin, server.port))
            log = api.output()[log_start:]
            # a stream whose client did not read for 30 s is closed by the server (sse-starlette
            # send_timeout); the subscriber then resumes with Last-Event-ID
            phase["server_send_timeouts"] = log.count("SendTimeoutError:") or log.count(
                "SendTimeoutError")
            phase["server_errors_logged"] = log.count("Exception in ASGI application")
            kinds: dict[str, int] = {}
            for line in _EXCEPTION_LINE.findall(log):
                kinds[line[:120]] = kinds.get(line[:120], 0) + 1
            phase["server_error_kinds"] = kinds
            if kinds:
                print(f"  server errors (each drops a stream): {kinds}", flush=True)
            phases.append(phase)
            print(f"  complete gap-free logs {phase['complete_gap_free_logs']}/{n}, "
                  f"{phase['dropped_connections_resumed']} drops resumed "
                  f"({phase['server_send_timeouts']} server send timeouts), "
                  f"{phase['frames_delivered']} frames in {phase['delivery_window_s']} s = "
                  f"{phase['events_per_s']} events/s (API CPU "
                  f"{phase['api_cpu_us_per_frame']} us/frame); API RSS {phase['api_rss_mb']} MB; "
                  f"API Redis connections {phase['api_redis_connections']}", flush=True)
        result["phases"] = phases

        print(f"latency at {1 / LATENCY_DELAY_S:.0f} events/s, {LATENCY_EVENTS} events ...",
              flush=True)
        sse = _summary(asyncio.run(sse_latency(url, LATENCY_EVENTS, LATENCY_DELAY_S)))
        raw = _summary(publish_latency(server.url, LATENCY_EVENTS, LATENCY_DELAY_S))
        result["latency"] = {"emit_to_sse_client": sse, "redis_publish_to_subscriber": raw}
        print(f"  emit -> SSE client:          p50 {sse['p50_ms']} ms, p99 {sse['p99_ms']} ms")
        print(f"  Redis PUBLISH -> subscriber: p50 {raw['p50_ms']} ms, p99 {raw['p99_ms']} ms")

        small, big = phases
        conns = big["api_redis_connections"]
        result["checks"] = {
            "every_subscriber_complete": all(
                p["complete_gap_free_logs"] == p["subscribers"] for p in phases),
            "no_stream_dropped": all(p["dropped_connections_resumed"] == 0 for p in phases),
            "one_pubsub_connection": conns["pubsub_max_while_delivering"] <= 1
            and small["api_redis_connections"]["pubsub_max_while_delivering"] <= 1,
            # bounded by the process's pools (asyncio reads, the threadpool's sync reads), not
            # one per subscriber: from 10 to 1,000 subscribers at most CONNECTION_GROWTH more
            "connections_do_not_grow_with_subscribers":
                conns["max_while_delivering"]
                <= small["api_redis_connections"]["max_while_delivering"] + CONNECTION_GROWTH,
        }
        print(f"checks: {result['checks']}")
        return result
    except BaseException:
        if api is not None:
            print(f"API log (tail):\n{api.output()[-4000:]}", file=sys.stderr)
        raise
    finally:
        admin.close()
        if api is not None:
            api.stop()
        if worker is not None:
            worker.stop()
        server.cleanup()


if __name__ == "__main__":
    args = [int(a) for a in sys.argv[1:3]]
    print(json.dumps(main(*args), indent=2))
