"""Many I/O-bound agents on one worker process, beside bare Celery on the same threads pool.

    .venv/bin/python -m benchmarks.io_bound [RUNS] [ROUNDS]

Starts its own redis-server and ONE worker process as `runcast worker --io-bound` starts it
(`celery -A tasks worker -E --pool threads --concurrency RUNS`, loading benchmarks.bare), which
runs every side but the plain-worker one, then, round by round, each side first in turn:
  - runcast: RUNS runs (default 1,000) of `bench_io`, an `async def` agent that awaits
    `asyncio.sleep(0.1)` 20 times and emits a token after each, submitted at once (from 8
    threads), then waited for one by one (the run store's wait, woken by each run's pub/sub
    channel, as a Celery result's get() is) until every run is terminal; each must have
    succeeded with its 22 events (started, 20 tokens, complete);
  - runcast without tokens: the same with `bench_io_quiet`, the same awaits and no token (2
    events a run): what the run's lifecycle costs (submit, claim, supervision on the shared loop,
    finish) without the 20,000 durable, announced events. Context, not the goal;
  - bare Celery: RUNS `bench.sleep` tasks (`time.sleep(2)`), apply_async at once (from 8
    threads, as runcast's side submits), then every result's get();
  - bare Celery on a plain Celery worker: as bare, sent to a second worker process started from
    a plain Celery app (benchmarks.bare_worker: the same settings on kombu's own Redis transport,
    which takes one message per BRPOP), idle while the other sides run. The goal's baseline stays
    the bare side on runcast's worker (the stricter one: that worker's consumer takes messages in
    bulk for bare tasks too); this one is what a plain Celery user runs. Context, not the goal;
  - bare Celery writing the events by hand: as bare, with `bench.sleep_emit` tasks that after
    each of 20 sleeps of 100 ms append a token to a Redis stream of their own and publish it
    (one pipelined round trip), the work runcast's side does besides waiting, done the way a
    plain Celery user would. Not the goal's baseline: it shows how much of runcast's time is
    the event log itself, and how much is runcast.
Between sides the benchmark waits for the worker to go idle (the side before leaves acks and task
events behind), counting that tail in the side's CPU, not in its time.
Reported: seconds per side and round (the ideal is 2 s), the goal's ratio (runcast / bare,
medians over rounds), runcast / bare-with-events, runcast / bare-on-a-plain-worker, runcast
without tokens / bare, the worker process's peak RSS while each side ran, and on runcast's side
how long the submitting took and when the last run started (its claim): how far the worker's
consumer fell behind the submitting (it takes up to 64 messages per round trip,
tasks/redis_transport.py; one at a time, the last of a thousand started 1.5 s after the
submitting ended), and on runcast's
and the bare side how long a task waits from its submit to its start (median; the bare task's
start is when its result was stored less its 2 s; below zero when it began before the submit
call returned, which publishes its task-sent event after the message). Where that wait goes,
stage by stage: benchmarks.io_start. Goal: runcast no slower.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any, Self

from benchmarks.runs import CpuMeter
from benchmarks.sse import rss_mb

RUNS = 1000
ROUNDS = 4  # the machine is shared: a side's time moves by a second from round to round
SUBMIT_THREADS = 8
EVENTS_PER_RUN = 22
# per runcast side with tokens (the goal's): how long submitting took, when the last run started
SUBMIT_S: list[float] = []
STARTED_S: list[float] = []
# per side and round, the median wait from a submit call's return to its task's start
START_LAG_MS: dict[str, list[float]] = {"runcast": [], "bare": []}
RATIO_TARGET = 1.0
STOCK_QUEUE = "bench-stock"  # the plain Celery worker's (benchmarks.bare_worker)


class PeakRss:
    def __init__(self, pid: int) -> None:
        self.pid, self.peak = pid, 0.0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.is_set():
            self.peak = max(self.peak, rss_mb(self.pid))
            self.stop.wait(0.1)

    def __enter__(self) -> Self:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()


def settle(meter: CpuMeter, quiet_share: float = 0.05, timeout_s: float = 15.0) -> None:
    """Wait until the worker, Redis and this process use under `quiet_share` of a core: each
    side starts on an idle worker, whichever went before it."""
    deadline = time.monotonic() + timeout_s
    cpu, at = meter.sample()
    while time.monotonic() < deadline:
        time.sleep(0.25)
        cpu_now, at_now = meter.sample()
        if (cpu_now - cpu) / (at_now - at) < quiet_share:
            return
        cpu, at = cpu_now, at_now


def submit_at_once(submit: Callable[[], Any], n: int) -> dict[Any, float]:
    """Call `submit()` n times from SUBMIT_THREADS threads: what each call returned (a run id,
    a Celery AsyncResult) -> when it returned (time.time()), in the order they returned."""
    submitted: dict[Any, float] = {}

    def one(_: int) -> None:
        handle = submit()
        submitted[handle] = time.time()

    with ThreadPoolExecutor(SUBMIT_THREADS) as pool:
        list(pool.map(one, range(n)))
    return submitted


def median_lag_ms(lags_s: Iterable[float]) -> float:
    return statistics.median(lags_s) * 1000


def runcast_side(tasks, rt, n: int, quiet: bool = False) -> float:
    """`quiet`: bench_io_quiet's runs (no tokens) instead of bench_io's."""
    agent, events = ("bench_io_quiet", 2) if quiet else ("bench_io", EVENTS_PER_RUN)
    started, wall_start = time.perf_counter(), time.time()
    submitted = submit_at_once(lambda: tasks.submit(agent, {}), n)
    ids = list(submitted)
    submit_s = time.perf_counter() - started
    deadline = time.monotonic() + 300
    statuses = []
    for run_id in ids:  # as the bare side waits: each in turn, woken by its own channel
        statuses.append(rt.store.wait(run_id, max(deadline - time.monotonic(), 0.1))["status"])
    elapsed = time.perf_counter() - started
    if any(s not in ("succeeded", "failed", "cancelled") for s in statuses):
        raise TimeoutError(f"{statuses.count('succeeded')} of {n} runs ended")
    bad = [i for i, s in zip(ids, statuses, strict=True) if s != "succeeded"]
    if bad:
        raise AssertionError(f"{len(bad)} runs did not succeed, e.g. {tasks.get_run(bad[0])}")
    runs = [tasks.get_run(i) for i in ids]
    short = [r for r in runs if r["last_seq"] != events]
    if short:
        raise AssertionError(f"{len(short)} runs do not have {events} events")
    starts = {r["run_id"]: datetime.fromisoformat(r["started_at"]).timestamp() for r in runs}
    if not quiet:  # the goal's side: how fast the worker took its runs
        SUBMIT_S.append(submit_s)
        STARTED_S.append(max(starts.values()) - wall_start)
        START_LAG_MS["runcast"].append(median_lag_ms(starts[i] - at for i, at in submitted.items()))
    return elapsed


def bare_side(task, n: int, args: tuple = (), queue: str | None = None,
              lag_of_sleep_s: float | None = None) -> float:
    """`lag_of_sleep_s`: the tasks only sleep that long; each one's start (when its result was
    stored, less that) is then set beside its submit (START_LAG_MS)."""
    started = time.perf_counter()
    submitted = submit_at_once(lambda: task.apply_async(args, queue=queue), n)
    for result in submitted:
        result.get(timeout=300)
    elapsed = time.perf_counter() - started
    if lag_of_sleep_s is not None:
        START_LAG_MS["bare"].append(median_lag_ms(
            _utc(result.date_done).timestamp() - lag_of_sleep_s - at
            for result, at in submitted.items()))
    return elapsed


def _utc(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def main(runs: int = RUNS, rounds: int = ROUNDS) -> dict:
    from benchmarks.bare import AGENT_MODULES, IO_STEP_S, IO_STEPS, set_up_sides
    from tests.redis_server import RedisServer
    from tests.services import start_worker

    server = RedisServer().start()
    worker = stock = None
    try:
        client = set_up_sides(server.url)
        sleep_task, emit_task = client.tasks["bench.sleep"], client.tasks["bench.sleep_emit"]
        import tasks
        from tasks.celeryapp import runtime

        worker = start_worker(server.url, name="bench-io", concurrency=runs,
                              extra_args=["--pool", "threads"], RUNCAST_AGENTS=AGENT_MODULES)
        # the context side's plain Celery worker, idle while the others run
        stock = start_worker(server.url, name="bench-stock", concurrency=runs,
                             app="benchmarks.bare_worker",
                             extra_args=["--pool", "threads", "-Q", STOCK_QUEUE])
        rt = runtime()
        meter = CpuMeter(worker.proc.pid, server.process.pid)
        stock_meter = CpuMeter(stock.proc.pid, server.process.pid)
        # Warm-up, every side at full size once: every thread of the pool started, each with
        # the Celery result backend it makes on its first task, the by-hand side's connections
        # and runcast's (a connection per run claiming or finishing at once) opened, the
        # shared loop started: paid once per process, by whichever side came first, unless
        # paid here
        runcast_side(tasks, rt, runs)
        runcast_side(tasks, rt, runs, quiet=True)
        bare_side(emit_task, runs, args=(5, IO_STEP_S))
        bare_side(sleep_task, runs, args=(0.5,), queue=STOCK_QUEUE)  # the stock worker's threads
        per_round = []
        for i in range(rounds):
            sides = [("runcast", lambda: runcast_side(tasks, rt, runs)),
                     ("bare", lambda: bare_side(sleep_task, runs,
                                                lag_of_sleep_s=IO_STEPS * IO_STEP_S)),
                     ("runcast_quiet", lambda: runcast_side(tasks, rt, runs, quiet=True)),
                     ("bare_events", lambda: bare_side(emit_task, runs)),
                     ("bare_stock", lambda: bare_side(sleep_task, runs, queue=STOCK_QUEUE))]
            sides = sides[i % len(sides):] + sides[:i % len(sides)]  # each side first in turn
            r = {}
            for name, run in sides:
                side_worker, side_meter = ((stock, stock_meter) if name == "bare_stock"
                                           else (worker, meter))
                cpu_before = side_meter.sample()[0]
                with PeakRss(side_worker.proc.pid) as rss:
                    r[f"{name}_s"] = run()
                    settle(side_meter)  # the side's tail (acks, task events) is its own
                r[f"{name}_cpu_ms"] = (side_meter.sample()[0] - cpu_before) / runs * 1000
                r[f"{name}_peak_rss_mb"] = rss.peak
            per_round.append(r)
            r["runcast_submit_s"], r["runcast_last_start_s"] = SUBMIT_S[-1], STARTED_S[-1]
            r["runcast_start_lag_ms"] = START_LAG_MS["runcast"][-1]
            r["bare_start_lag_ms"] = START_LAG_MS["bare"][-1]
            print(f"round {i + 1}/{rounds}: runcast {r['runcast_s']:.2f} s (submitted in "
                  f"{r['runcast_submit_s']:.2f} s, the last run started at "
                  f"{r['runcast_last_start_s']:.2f} s, a run's start {r['runcast_start_lag_ms']:.0f} "
                  f"ms after its submit, p50, bare's {r['bare_start_lag_ms']:.0f} ms; worker peak RSS "
                  f"{r['runcast_peak_rss_mb']:.0f} MB), bare {r['bare_s']:.2f} s "
                  f"({r['bare_peak_rss_mb']:.0f} MB), bare with events {r['bare_events_s']:.2f} s, "
                  f"bare on a plain Celery worker {r['bare_stock_s']:.2f} s, runcast without "
                  f"tokens {r['runcast_quiet_s']:.2f} s; CPU per run "
                  f"(worker, Redis, this process) runcast {r['runcast_cpu_ms']:.2f} ms, without "
                  f"tokens {r['runcast_quiet_cpu_ms']:.2f} ms, bare {r['bare_cpu_ms']:.2f} ms; "
                  f"load {os.getloadavg()[0]:.1f}", flush=True)
    finally:
        for process in (worker, stock):
            if process is not None:
                process.stop()
        server.cleanup()

    def med(key: str) -> float:
        return round(statistics.median(r[key] for r in per_round), 3)

    ratio = statistics.median(r["runcast_s"] / r["bare_s"] for r in per_round)
    events_ratio = statistics.median(r["runcast_s"] / r["bare_events_s"] for r in per_round)
    stock_ratio = statistics.median(r["runcast_s"] / r["bare_stock_s"] for r in per_round)
    quiet_ratio = statistics.median(r["runcast_quiet_s"] / r["bare_s"] for r in per_round)
    result = {
        "worker": f"celery -A tasks worker -E --pool threads --concurrency {runs}",
        "runs": runs, "rounds": rounds, "ideal_s": 2.0,
        "runcast_s": med("runcast_s"), "bare_s": med("bare_s"),
        "runcast_peak_rss_mb": med("runcast_peak_rss_mb"),
        "bare_peak_rss_mb": med("bare_peak_rss_mb"),
        "runcast_submit_s": med("runcast_submit_s"),
        "runcast_last_start_s": med("runcast_last_start_s"),
        "runcast_start_lag_ms": med("runcast_start_lag_ms"),
        "bare_start_lag_ms": med("bare_start_lag_ms"),
        "runcast_cpu_ms_per_run": med("runcast_cpu_ms"), "bare_cpu_ms_per_run": med("bare_cpu_ms"),
        "time_ratio": round(ratio, 3),
        "bare_events_s": med("bare_events_s"),
        "bare_events_cpu_ms_per_run": med("bare_events_cpu_ms"),
        "time_ratio_vs_bare_events": round(events_ratio, 3),
        "bare_stock_s": med("bare_stock_s"),
        "bare_stock_peak_rss_mb": med("bare_stock_peak_rss_mb"),
        "time_ratio_vs_bare_stock": round(stock_ratio, 3),
        "runcast_quiet_s": med("runcast_quiet_s"),
        "runcast_quiet_cpu_ms_per_run": med("runcast_quiet_cpu_ms"),
        "time_ratio_quiet_vs_bare": round(quiet_ratio, 3),
        "load_average": os.getloadavg(),
        "target": "runcast time <= bare time (ratio <= 1.0)",
        "target_met": ratio <= RATIO_TARGET,
    }
    print(f"runcast {result['runcast_s']} s vs bare {result['bare_s']} s: {ratio:.2f}x "
          f"(goal <= {RATIO_TARGET}); worker peak RSS runcast {result['runcast_peak_rss_mb']} MB,"
          f" bare {result['bare_peak_rss_mb']} MB; bare Celery writing the same tokens by hand "
          f"{result['bare_events_s']} s: runcast {events_ratio:.2f}x that; bare Celery on a plain "
          f"Celery worker {result['bare_stock_s']} s: runcast {stock_ratio:.2f}x that; runcast "
          f"without its tokens {result['runcast_quiet_s']} s: {quiet_ratio:.2f}x bare", flush=True)
    return result


if __name__ == "__main__":
    args = [int(a) for a in sys.argv[1:3]]
    print(json.dumps(main(*args), indent=2))
