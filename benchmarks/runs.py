"""Runs through runcast beside bare Celery tasks, on the same worker.

    .venv/bin/python -m benchmarks.runs [ROUNDS]

Starts its own redis-server and ONE Celery worker for both sides
(`celery -A tasks worker -E -c 4`, loading benchmarks.bare), then alternates, round by round,
and in the opposite order every other round (the machine's load drifts):
  - round trips: N sequential no-ops, each submitted and waited for before the next (p50);
    runcast: `tasks.submit("bench_noop", {})` + `tasks.wait(run_id)`;
    bare:    `noop.apply_async(args=[{}])` + `.get()` (Redis result backend);
  - throughput: M no-ops submitted at once, then every result waited for.
Each round pairs the two sides measured back to back; the figures are medians over rounds of
those pairs (ratios and differences per round, then their median), the best rounds beside them.
Wall-clock figures swing with the machine's other load, so the throughput rounds also count the
CPU time (Linux /proc) that the worker's processes, redis-server and this process spent per run:
on a busy machine, throughput follows CPU per run, and that figure barely moves with the load.
Targets: runcast throughput >= 0.7 x bare; runcast p50 within 2 ms of bare.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time

ROUNDS = 6
ROUND_TRIPS = 150  # N, per side and round
THROUGHPUT_RUNS = 400  # M, per side and round
WARM_UP = 100
WORKER_CONCURRENCY = 4
THROUGHPUT_TARGET = 0.7
P50_TARGET_MS = 2.0


# -- the two sides -------------------------------------------------------------------------------

def runcast_round_trips(tasks, n: int) -> list[float]:
    times = []
    for _ in range(n):
        start = time.perf_counter()
        run = tasks.wait(tasks.submit("bench_noop", {}), timeout=30)
        times.append(time.perf_counter() - start)
        if run["status"] != "succeeded":
            raise AssertionError(f"a run ended {run['status']}: {run}")
    return times


def bare_round_trips(noop, n: int) -> list[float]:
    times = []
    for _ in range(n):
        start = time.perf_counter()
        noop.apply_async(args=[{}]).get(timeout=30)
        times.append(time.perf_counter() - start)
    return times


def runcast_throughput(tasks, m: int) -> float:
    start = time.perf_counter()
    ids = [tasks.submit("bench_noop", {}) for _ in range(m)]
    for run_id in ids:
        if tasks.wait(run_id, timeout=120)["status"] != "succeeded":
            raise AssertionError(f"run {run_id} did not succeed")
    return m / (time.perf_counter() - start)


def bare_throughput(noop, m: int) -> float:
    start = time.perf_counter()
    results = [noop.apply_async(args=[{}]) for _ in range(m)]
    for result in results:
        result.get(timeout=120)
    return m / (time.perf_counter() - start)


# -- CPU accounting ----------------------------------------------------------------------------

_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _stat(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None


def cpu_seconds(pid: int) -> float:
    fields = _stat(pid)
    return (int(fields[11]) + int(fields[12])) / _TICK if fields else 0.0


def child_pids(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _stat(int(entry))
            if fields and int(fields[1]) == pid:
                out.append(int(entry))
    return out


class CpuMeter:
    """CPU seconds of the worker (main + pool processes), redis-server, this process and any
    `other` processes named at construction."""

    def __init__(self, worker_pid: int, redis_pid: int, **other: int) -> None:
        self.worker_pid, self.redis_pid, self.other = worker_pid, redis_pid, other
        self.available = os.path.exists(f"/proc/{worker_pid}/stat")

    def by_process(self) -> dict[str, float]:
        """CPU seconds so far: worker, redis, this process ("callers") and each named other."""
        if not self.available:
            return {}
        pool = child_pids(self.worker_pid)  # pool processes are replaced only on a crash
        return {"worker": cpu_seconds(self.worker_pid) + sum(cpu_seconds(p) for p in pool),
                "redis": cpu_seconds(self.redis_pid), "callers": sum(os.times()[:2]),
                **{name: cpu_seconds(pid) for name, pid in self.other.items()}}

    def sample(self) -> tuple[float, float]:
        return sum(self.by_process().values()), time.perf_counter()


# -- the benchmark -------------------------------------------------------------------------------

def _round(tasks, noop, meter: CpuMeter, n: int, m: int,
           runcast_first: bool) -> dict[str, float]:
    sides = [("runcast", tasks, runcast_round_trips, runcast_throughput),
             ("bare", noop, bare_round_trips, bare_throughput)]
    if not runcast_first:
        sides.reverse()
    out: dict[str, float] = {}
    for name, handle, round_trips, _ in sides:
        out[f"{name}_p50_ms"] = statistics.median(round_trips(handle, n)) * 1000
    for name, handle, _, throughput in sides:
        cpu_before, _ = meter.sample()
        out[f"{name}_per_s"] = throughput(handle, m)
        cpu_after, _ = meter.sample()
        out[f"{name}_cpu_ms"] = (cpu_after - cpu_before) / m * 1000
    return out


def main(rounds: int = ROUNDS, n: int = ROUND_TRIPS, m: int = THROUGHPUT_RUNS) -> dict:
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if root not in sys.path:
        sys.path.insert(0, root)
    from benchmarks.bare import AGENT_MODULES, set_up_sides
    from tests.redis_server import RedisServer
    from tests.services import start_worker

    server = RedisServer().start()
    worker = None
    try:
        noop = set_up_sides(server.url).tasks["bench.noop"]
        import tasks

        worker = start_worker(server.url, name="bench", concurrency=WORKER_CONCURRENCY,
                              RUNCAST_AGENTS=AGENT_MODULES)
        meter = CpuMeter(worker.proc.pid, server.process.pid)
        runcast_round_trips(tasks, WARM_UP)  # connections, scripts, pool processes
        bare_round_trips(noop, WARM_UP)

        per_round = []
        for i in range(rounds):
            r = _round(tasks, noop, meter, n, m, runcast_first=i % 2 == 0)
            per_round.append(r)
            print(f"round {i + 1}/{rounds}: p50 runcast {r['runcast_p50_ms']:.2f} ms, bare "
                  f"{r['bare_p50_ms']:.2f} ms; throughput runcast {r['runcast_per_s']:.0f}/s, "
                  f"bare {r['bare_per_s']:.0f}/s; CPU per run runcast {r['runcast_cpu_ms']:.2f} "
                  f"ms, bare {r['bare_cpu_ms']:.2f} ms", flush=True)

        def med(key):
            return statistics.median(r[key] for r in per_round)

        ratio = statistics.median(r["runcast_per_s"] / r["bare_per_s"] for r in per_round)
        delta = statistics.median(r["runcast_p50_ms"] - r["bare_p50_ms"] for r in per_round)
        return {
            "worker": f"RUNCAST_AGENTS={AGENT_MODULES} celery {' '.join(worker.args[1:])}",
            "rounds": rounds, "round_trips_per_side_and_round": n,
            "throughput_runs_per_side_and_round": m,
            "runcast_throughput_per_s": round(med("runcast_per_s"), 1),
            "bare_throughput_per_s": round(med("bare_per_s"), 1),
            "runcast_best_throughput_per_s": round(max(r["runcast_per_s"] for r in per_round), 1),
            "bare_best_throughput_per_s": round(max(r["bare_per_s"] for r in per_round), 1),
            "throughput_ratio": round(ratio, 3),
            "runcast_p50_ms": round(med("runcast_p50_ms"), 3),
            "bare_p50_ms": round(med("bare_p50_ms"), 3),
            "p50_delta_ms": round(delta, 3),
            "runcast_cpu_ms_per_run": round(med("runcast_cpu_ms"), 3),
            "bare_cpu_ms_per_run": round(med("bare_cpu_ms"), 3),
            # bare CPU / runcast CPU: the throughput ratio of a machine busy with this alone
            "cpu_throughput_ratio": round(statistics.median(
                r["bare_cpu_ms"] / r["runcast_cpu_ms"] for r in per_round
            ), 3) if meter.available else None,
            "throughput_target": f">= {THROUGHPUT_TARGET} x bare",
            "throughput_target_met": ratio >= THROUGHPUT_TARGET,
            "p50_target": f"within {P50_TARGET_MS} ms of bare",
            "p50_target_met": delta <= P50_TARGET_MS,
        }
    finally:
        if worker is not None:
            worker.stop()
        server.cleanup()


if __name__ == "__main__":
    print(json.dumps(main(int(sys.argv[1]) if len(sys.argv) > 1 else ROUNDS), indent=2))
