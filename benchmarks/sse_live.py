"""SSE fan-out to a crowd that arrives while the run is live, beside a minimal SSE server.

    .venv/bin/python -m benchmarks.sse_live [SUBSCRIBERS] [WORDS] [INTERVAL_MS]

Starts its own redis-server, ONE Celery worker and ONE API process (uvicorn `api.app:app`).
A `tokens` run of WORDS words (default 1,000) with INTERVAL_MS (default 2 ms) between tokens
starts; once it has emitted its first events, SUBSCRIBERS clients (default 500; minimal
asyncio HTTP/1.1 clients in this process, a connection each) open GET /runs/{id}/stream from seq 0,
all at once. Each must receive the complete log, seq 1..WORDS+2 in order, no gap, no duplicate,
the stream ending after the terminal event (a dropped stream resumes with Last-Event-ID, counted).

The baseline, in the same run: benchmarks.reference_sse, one uvicorn process with a bare ASGI app
serving the same frames (this run's, read back from the API) from memory on the schedule the run
emitted them (the envelopes' `ts`), to the same number of clients from the same client process.

Reported per side: events/s (frames received by all subscribers over the time from the first to
the last frame), median and p90 time from a subscriber's request to its first frame; for runcast
also the API's Redis connections (CLIENT LIST, matched to the API's sockets) idle and the most seen
while the crowd attached and was served, pub/sub ones apart. Goals: events/s >= 0.8 x the
reference, median time to first event < 1 s, one pub/sub connection, connections bounded.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import sys
import tempfile
import time

import httpx
import redis

from benchmarks.reference_sse import emit_offsets, split_frames
from benchmarks.sse import (
    _ID,
    Sampler,
    _complete_frames_end,
    api_redis_connections,
    percentile,
    rss_mb,
)
from tests.redis_server import RedisServer, free_port
from tests.services import BIN, ROOT, Process, start_api, start_worker, wait_http

SUBSCRIBERS = 500
WORDS = 1000
INTERVAL_MS = 2.0
LIVE_AFTER_EVENTS = 5  # the crowd connects once the run has emitted this many events
EVENTS_RATIO_TARGET = 0.8
FIRST_EVENT_TARGET_S = 1.0
TIMEOUT_S = 300


class _Dechunk:
    """The body of a chunked HTTP/1.1 response, as it arrives."""

    def __init__(self) -> None:
        self.raw = b""
        self.ended = False

    def feed(self, data: bytes) -> bytes:
        self.raw += data
        out = []
        while True:
            line_end = self.raw.find(b"\r\n")
            if line_end < 0:
                break
            size = int(self.raw[:line_end].split(b";")[0], 16)
            if len(self.raw) < line_end + 2 + size + 2:
                break
            out.append(self.raw[line_end + 2:line_end + 2 + size])
            self.raw = self.raw[line_end + 2 + size + 2:]
            if size == 0:
                self.ended = True
                break
        return b"".join(out)


async def _stream_once(host: str, port: int, path: str, headers: dict[str, str],
                       on_body) -> None:
    """One GET over a raw asyncio connection (a minimal client: what the benchmark measures is
    the server, not a client library); `on_body(bytes)` for each piece of the body."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
                     f"Accept: text/event-stream\r\n{extra}\r\n".encode())
        head = await reader.readuntil(b"\r\n\r\n")
        on_body(b"")  # the response has started
        status = int(head.split(b" ", 2)[1])
        if status != 200:
            raise RuntimeError(f"stream answered {status}")
        if b"chunked" not in head.lower():
            raise RuntimeError("expected a chunked response")
        body = _Dechunk()
        while not body.ended:
            data = await reader.read(65536)
            if not data:
                raise ConnectionResetError("the stream ended before its last chunk")
            piece = body.feed(data)
            if piece:
                on_body(piece)
    finally:
        writer.close()


async def _subscriber(url: str, path: str, stats: dict) -> list[int]:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    seqs: list[int] = []
    started = time.perf_counter()
    state = {"first": None, "buffer": b""}

    def on_body(piece: bytes) -> None:
        now = time.perf_counter()
        if not piece:
            stats["headers_s"].append(now - started)
            return
        if state["first"] is None:
            state["first"] = now
            stats["first_event_s"].append(now - started)
        stats["window"][0] = min(stats["window"][0], now)
        stats["window"][1] = max(stats["window"][1], now)
        buffer = state["buffer"] + piece
        end = _complete_frames_end(buffer)
        if end:
            seqs.extend(int(m) for m in _ID.findall(buffer, 0, end))
            buffer = buffer[end:]
        state["buffer"] = buffer

    while True:
        headers = {"Last-Event-ID": str(seqs[-1])} if seqs else {}
        state["buffer"] = b""
        try:
            await asyncio.wait_for(_stream_once(host, int(port), path, headers, on_body),
                                   TIMEOUT_S)
            return seqs
        except (ConnectionError, asyncio.IncompleteReadError):
            stats["drops"] += 1


async def crowd(url: str, path: str, n: int) -> dict:
    """n subscribers at once on `path`; returns their logs and timings."""
    stats = {"headers_s": [], "first_event_s": [], "window": [float("inf"), 0.0], "drops": 0}
    results = await asyncio.gather(*(_subscriber(url, path, stats) for _ in range(n)))
    frames = sum(len(seqs) for seqs in results)
    window = stats["window"][1] - stats["window"][0]
    return {"results": results, "frames": frames, "window_s": window,
            "events_per_s": frames / window if window > 0 else 0.0,
            "first_event_p50_s": statistics.median(stats["first_event_s"]),
            "first_event_p90_s": percentile(stats["first_event_s"], 0.9),
            "response_start_p50_s": statistics.median(stats["headers_s"]),
            "drops": stats["drops"]}


async def runcast_side(url: str, n: int, words: int, interval_s: float, api_pid: int,
                       admin: redis.Redis, redis_port: int) -> tuple[dict, str]:
    text = " ".join(f"w{i}" for i in range(words))
    async with httpx.AsyncClient(base_url=url, timeout=60) as client:
        run = (await client.post("/runs", json={"agent": "tokens", "input": {
            "text": text, "delay": interval_s}})).json()["run_id"]
        while (await client.get(f"/runs/{run}")).json()["last_seq"] < LIVE_AFTER_EVENTS:
            await asyncio.sleep(0.005)
    idle = api_redis_connections(api_pid, admin, redis_port)
    with Sampler(api_pid, admin, redis_port) as sampler:
        side = await crowd(url, f"/runs/{run}/stream", n)
    side["api_rss_mb_end"] = round(rss_mb(api_pid), 1)
    side["api_redis_connections"] = {"idle": idle["total"],
                                     "max_while_serving": sampler.max_total,
                                     "pubsub_max_while_serving": sampler.max_pubsub}
    return side, run


async def reference_side(n: int, frames: bytes) -> dict:
    port = free_port()
    with tempfile.NamedTemporaryFile(suffix=".sse", delete=False) as file:
        file.write(frames)
    server = Process([str(BIN / "python"), "-m", "benchmarks.reference_sse", str(port),
                      file.name],
                     {**os.environ, "PYTHONPATH": str(ROOT)}, "reference-sse").start()
    try:
        url = f"http://127.0.0.1:{port}"
        wait_http(url + "/start-check", server)
        async with httpx.AsyncClient(base_url=url) as client:
            await client.post("/start")
        offsets = emit_offsets(split_frames(frames))
        await asyncio.sleep(offsets[LIVE_AFTER_EVENTS - 1])  # as late as on runcast's side
        return await crowd(url, "/stream", n)
    finally:
        server.stop()
        os.unlink(file.name)


def _side_summary(side: dict, expected: list[int]) -> dict:
    return {
        "complete_gap_free_logs": sum(seqs == expected for seqs in side["results"]),
        "drops_resumed": side["drops"],
        "frames": side["frames"],
        "window_s": round(side["window_s"], 3),
        "events_per_s": round(side["events_per_s"]),
        "first_event_p50_s": round(side["first_event_p50_s"], 3),
        "first_event_p90_s": round(side["first_event_p90_s"], 3),
        "response_start_p50_s": round(side["response_start_p50_s"], 3),
        **{k: side[k] for k in ("api_rss_mb_end", "api_redis_connections") if k in side},
    }


def main(subscribers: int = SUBSCRIBERS, words: int = WORDS,
         interval_ms: float = INTERVAL_MS) -> dict:
    interval_s = interval_ms / 1000
    server = RedisServer().start()
    admin = redis.Redis.from_url(server.url)
    worker = api = None
    try:
        worker = start_worker(server.url, name="bench-live", concurrency=1)
        api, url = start_api(server.url)
        with httpx.Client(base_url=url, timeout=60) as http:  # warm up the whole path
            warm = http.post("/runs", json={"agent": "tokens", "input": {"text": "a b"}}).json()
            http.get(f"/runs/{warm['run_id']}/stream").read()
        print(f"fan-out, live: {subscribers} subscribers join a {words}-token run "
              f"({interval_ms} ms apart) ...", flush=True)
        ours, run = asyncio.run(runcast_side(url, subscribers, words, interval_s,
                                             api.proc.pid, admin, server.port))
        with httpx.Client(base_url=url, timeout=60) as http:
            frames = http.get(f"/runs/{run}/stream").read()
        print(f"reference: the same {words + 2} frames from memory ...", flush=True)
        ref = asyncio.run(reference_side(subscribers, frames))
    finally:
        admin.close()
        if api is not None:
            api.stop()
        if worker is not None:
            worker.stop()
        server.cleanup()

    expected = list(range(1, words + 3))
    offsets = emit_offsets(split_frames(frames))
    result = {"subscribers": subscribers, "words": words, "interval_ms": interval_ms,
              "run_emit_duration_s": round(offsets[-1], 3),
              "load_average": os.getloadavg(), "runcast": _side_summary(ours, expected),
              "reference": _side_summary(ref, expected)}
    ratio = ours["events_per_s"] / ref["events_per_s"]
    conns = result["runcast"]["api_redis_connections"]
    result["events_per_s_ratio"] = round(ratio, 3)
    result["checks"] = {
        "every_subscriber_complete": result["runcast"]["complete_gap_free_logs"] == subscribers,
        "events_per_s_ratio_at_least_0.8": ratio >= EVENTS_RATIO_TARGET,
        "first_event_median_under_1s": ours["first_event_p50_s"] < FIRST_EVENT_TARGET_S,
        "one_pubsub_connection": conns["pubsub_max_while_serving"] <= 1,
    }
    r, b = result["runcast"], result["reference"]
    print(f"  runcast:   {r['events_per_s']} events/s, first event p50 {r['first_event_p50_s']} s "
          f"(p90 {r['first_event_p90_s']} s, headers p50 {r['response_start_p50_s']} s), complete logs {r['complete_gap_free_logs']}/"
          f"{subscribers}, {r['drops_resumed']} drops resumed; API Redis connections {conns}")
    print(f"  reference: {b['events_per_s']} events/s, first event p50 {b['first_event_p50_s']} s "
          f"(p90 {b['first_event_p90_s']} s), complete logs {b['complete_gap_free_logs']}")
    print(f"  the run emitted its {words + 2} events over {offsets[-1]:.2f} s")
    print(f"  ratio {ratio:.2f}x (goal >= {EVENTS_RATIO_TARGET}); load {result['load_average']}")
    print(f"checks: {result['checks']}", flush=True)
    return result


if __name__ == "__main__":
    args = [float(a) for a in sys.argv[1:4]]
    if args:
        args[:2] = [int(a) for a in args[:2]]
    print(json.dumps(main(*args), indent=2))
