"""Batches at scale beside bare Celery, side by side in one run.

    .venv/bin/python -m benchmarks.batches [RUNS] [ROUNDS] [--end-to-end-only]

Starts its own redis-server, ONE API process (uvicorn `api.app:app`) and, for the second part,
ONE Celery worker (`celery -A tasks worker -E -c 4`, loading benchmarks.bare) that both sides use.
  1. accept, ROUNDS rounds, alternating which side goes first: `POST /batches` of RUNS `echo` runs
     (until the 202) beside bare Celery `send_task` of RUNS messages to the same broker (this
     process, plain Celery with runcast's settings (benchmarks.bare.stock_client), one producer,
     results ignored; the messages go to a queue
     nobody consumes and are deleted after). Goal: runcast <= 0.15 x bare.
  2. first request to last result, once per side with the same worker: RUNS `echo` runs as one
     batch, until the batch stream's `done` frame and every result read back as NDJSON; beside
     RUNS bare Celery no-op tasks (`bench.noop`, results to the Redis backend), from the first
     `send_task` until every result is in Redis. Goal: runcast <= 1.25 x bare.
  3. the batch stream of another batch of RUNS: one subscriber connected at the start, one in
     the middle; each must see every status change of every run exactly once (ids 1..2 x RUNS + 1, each run
     `running` then `succeeded`, `done` last).
The figures swing with the machine's other load: read them as ratios measured back to back.
`--end-to-end-only` (or RUNCAST_BENCH_END_TO_END_ONLY=1) runs part 2 alone, to iterate on it.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import threading
import time

import httpx

RUNS = 10_000
ROUNDS = 2
WORKER_CONCURRENCY = 4
ACCEPT_TARGET = 0.15
END_TO_END_TARGET = 1.25
BARE_QUEUE = "bench-bare-accept"  # nobody consumes it


def _batch_body(n: int) -> bytes:
    return json.dumps({"runs": [{"agent": "echo", "input": {"i": i}} for i in range(n)]}).encode()


def runcast_accept(url: str, body: bytes) -> tuple[float, str]:
    start = time.perf_counter()
    response = httpx.post(f"{url}/batches", content=body, timeout=300,
                          headers={"Content-Type": "application/json"})
    elapsed = time.perf_counter() - start
    if response.status_code != 202:
        raise AssertionError(f"POST /batches: {response.status_code} {response.text[:300]}")
    return elapsed, response.json()["batch_id"]


def bare_accept(app, n: int) -> float:
    start = time.perf_counter()
    with app.producer_or_acquire() as producer:
        for _ in range(n):
            app.send_task("bench.noop", args=[{}], queue=BARE_QUEUE, producer=producer,
                          ignore_result=True)
    return time.perf_counter() - start


class Watcher(threading.Thread):
    """One batch stream subscriber: every frame, in a list."""

    def __init__(self, url: str, batch_id: str) -> None:
        super().__init__(daemon=True)
        self.url, self.batch_id = url, batch_id
        self.frames: list[tuple[int, str, dict]] = []
        self.error: BaseException | None = None

    def run(self) -> None:
        from tests.api_helpers import FrameReader

        try:
            with httpx.stream("GET", f"{self.url}/batches/{self.batch_id}/stream",
                              timeout=600) as response:
                reader = FrameReader()
                for text in response.iter_text():
                    for frame in reader.feed(text):
                        self.frames.append((int(frame.id), frame.event, frame.data))
                        if frame.event == "done":
                            return
        except BaseException as exc:  # noqa: BLE001 - reported by check()
            self.error = exc

    def check(self, n: int) -> dict:
        """Every status change of every run exactly once."""
        if self.error is not None:
            return {"ok": False, "error": repr(self.error)}
        seqs = [seq for seq, _, _ in self.frames]
        changes: dict[str, list[str]] = {}
        for _, event, data in self.frames:
            if event == "run":
                changes.setdefault(data["run_id"], []).append(data["status"])
        ok = (seqs == list(range(1, 2 * n + 2)) and self.frames[-1][1] == "done"
              and len(changes) == n
              and all(seen == ["running", "succeeded"] for seen in changes.values()))
        return {"ok": ok, "frames": len(self.frames), "runs": len(changes)}


def runcast_end_to_end(url: str, body: bytes, n: int) -> float:
    """POST, the batch stream until `done` (as `runcast batch` waits), every result as NDJSON."""
    start = time.perf_counter()
    _, batch_id = runcast_accept(url, body)
    watcher = Watcher(url, batch_id)
    watcher.run()
    if watcher.error is not None:
        raise watcher.error
    lines = 0
    with httpx.stream("GET", f"{url}/batches/{batch_id}/results", timeout=300,
                      headers={"Accept": "application/x-ndjson"}) as response:
        for line in response.iter_lines():
            if line and json.loads(line)["status"] == "succeeded":
                lines += 1
    if lines != n:
        raise AssertionError(f"{lines} of {n} results succeeded")
    return time.perf_counter() - start


def stream_exactly_once(url: str, body: bytes, n: int) -> dict:
    """Another batch, one subscriber from the start, one connected in the middle."""
    _, batch_id = runcast_accept(url, body)
    early = Watcher(url, batch_id)
    early.start()
    while len(early.frames) < n and early.is_alive():  # the middle: half the changes seen
        time.sleep(0.01)
    late = Watcher(url, batch_id)
    late.start()
    early.join(900)
    late.join(300)
    return {"subscriber_at_start": early.check(n), "subscriber_in_middle": late.check(n)}


def bare_end_to_end(app, client, n: int) -> float:
    start = time.perf_counter()
    ids = []
    with app.producer_or_acquire() as producer:
        for _ in range(n):
            ids.append(app.send_task("bench.noop", args=[{}], producer=producer).id)
    waiting = [f"celery-task-meta-{task_id}" for task_id in ids]
    while waiting:
        present = []
        for i in range(0, len(waiting), 1000):
            present += client.mget(waiting[i : i + 1000])
        waiting = [key for key, value in zip(waiting, present, strict=True) if value is None]
        if waiting:
            time.sleep(0.05)
    return time.perf_counter() - start


def main(n: int = RUNS, rounds: int = ROUNDS, end_to_end_only: bool = False) -> dict:
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if root not in sys.path:
        sys.path.insert(0, root)
    import redis

    from benchmarks.bare import AGENT_MODULES, set_up_sides
    from tests.redis_server import RedisServer
    from tests.services import start_api, start_worker

    server = RedisServer().start()
    processes = []
    try:
        app = set_up_sides(server.url)  # the bare side: plain Celery, kombu's own transport

        client = redis.Redis.from_url(server.url)
        api, url = start_api(server.url, RUNCAST_AGENTS=AGENT_MODULES)
        processes.append(api)
        body = _batch_body(n)
        runcast_accept(url, _batch_body(100))  # warm up: connections, scripts
        bare_accept(app, 100)

        accept = []
        for i in range(0 if end_to_end_only else rounds):
            sides = ["runcast", "bare"] if i % 2 == 0 else ["bare", "runcast"]
            got = {}
            for side in sides:
                got[side] = runcast_accept(url, body)[0] if side == "runcast" else bare_accept(
                    app, n)
            accept.append(got)
            print(f"accept round {i + 1}/{rounds}: POST /batches of {n}: {got['runcast']:.2f} s, "
                  f"bare send_task x {n}: {got['bare']:.2f} s, ratio "
                  f"{got['runcast'] / got['bare']:.3f}", flush=True)
        client.flushdb()  # the undispatched batches and the bare messages: part 2 starts clean

        worker = start_worker(server.url, name="bench", concurrency=WORKER_CONCURRENCY,
                              RUNCAST_AGENTS=AGENT_MODULES)
        processes.append(worker)
        bare_s = bare_end_to_end(app, client, n)
        print(f"bare: {n} no-op tasks, first send to last result: {bare_s:.1f} s", flush=True)
        ours_s = runcast_end_to_end(url, body, n)
        print(f"runcast: a batch of {n} echo runs, POST to the last result: {ours_s:.1f} s",
              flush=True)
        if end_to_end_only:
            return {"runs": n, "runcast_first_request_to_last_result_s": round(ours_s, 2),
                    "bare_first_request_to_last_result_s": round(bare_s, 2),
                    "end_to_end_ratio": round(ours_s / bare_s, 3),
                    "end_to_end_target_met": ours_s / bare_s <= END_TO_END_TARGET}
        ours = stream_exactly_once(url, body, n)
        print(f"batch stream of {n} runs: subscriber at the start "
              f"{ours['subscriber_at_start']}, in the middle {ours['subscriber_in_middle']}",
              flush=True)

        accept_ratio = statistics.median(r["runcast"] / r["bare"] for r in accept)
        end_ratio = ours_s / bare_s
        exactly_once = ours["subscriber_at_start"]["ok"] and ours["subscriber_in_middle"]["ok"]
        return {
            "runs": n, "accept_rounds": rounds,
            "runcast_post_batches_s": round(statistics.median(r["runcast"] for r in accept), 3),
            "bare_send_task_s": round(statistics.median(r["bare"] for r in accept), 3),
            "accept_ratio": round(accept_ratio, 3),
            "accept_target": f"<= {ACCEPT_TARGET} x bare",
            "accept_target_met": accept_ratio <= ACCEPT_TARGET,
            "worker": f"RUNCAST_AGENTS={AGENT_MODULES} celery {' '.join(worker.args[1:])}",
            "runcast_first_request_to_last_result_s": round(ours_s, 2),
            "bare_first_request_to_last_result_s": round(bare_s, 2),
            "end_to_end_ratio": round(end_ratio, 3),
            "end_to_end_target": f"<= {END_TO_END_TARGET} x bare",
            "end_to_end_target_met": end_ratio <= END_TO_END_TARGET,
            "stream_subscriber_at_start": ours["subscriber_at_start"],
            "stream_subscriber_in_middle": ours["subscriber_in_middle"],
            "stream_exactly_once": exactly_once,
        }
    finally:
        for process in reversed(processes):
            process.stop()
        server.cleanup()


if __name__ == "__main__":
    only = ("--end-to-end-only" in sys.argv[1:]
            or os.environ.get("RUNCAST_BENCH_END_TO_END_ONLY") == "1")
    args = [int(a) for a in sys.argv[1:] if not a.startswith("--")][:2]
    print(json.dumps(main(*args, end_to_end_only=only), indent=2))
