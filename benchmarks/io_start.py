"""Where the I/O-bound benchmark's runs wait before they start, beside bare Celery's tasks.

    .venv/bin/python -m benchmarks.io_start [ROUNDS]

Not part of `make bench`: a probe behind benchmarks.io_bound's ratio. The same worker
(`--pool threads -c 1000`, as io_bound starts it) loads benchmarks.start_clock, which marks each
task's way from the consumer to its start. Each round submits 1,000 `bench_io` runs, then 1,000
bare `bench.sleep` tasks, from 8 threads as io_bound does, waits for them, and prints per side
the percentiles (ms) of each stage:
  - fetched:   submitted (the submit call returned) -> the consumer made its Request (below zero
    when the worker had the message before the call returned: a bare `apply_async` publishes its
    task-sent event after the message);
  - to thread: handed to the threads pool -> a pool thread began it (a thread woken, then the
    GIL taken, while the process's other threads want it too);
  - started event: Celery's task-started event (its buffer of task events is published every
    24 events, by whichever thread fills it, under one lock);
  - in all:    submitted -> the task body began.
The bare side's work is a `time.sleep`, so the only threads wanting the GIL besides the
consumer are the ones starting; runcast's side runs the started agents meanwhile (their awaits
and tokens on the shared loop, the event writer, claims).
"""

from __future__ import annotations

import json
import sys

from benchmarks.io_bound import settle, submit_at_once
from benchmarks.runs import CpuMeter
from benchmarks.sse import percentile

RUNS = 1000
CLOCK = "benchmarks.start_clock"  # the worker-side clock, an agent module
ROUNDS = 3
STAGES = {"fetched": ("submitted", "received"), "to thread": ("pooled", "accepted"),
          "started event": ("accepted", "begun"), "in all": ("submitted", "begun")}


def stages(marks: dict[str, dict[str, float]], submitted: dict[str, float]) -> dict:
    """Per stage: p50, p90 and max in ms over the side's tasks."""
    out = {}
    for stage, (since, until) in STAGES.items():
        waits = [(marks[i][until] - (at if since == "submitted" else marks[i][since])) * 1000
                 for i, at in submitted.items()]
        out[stage] = {q: round(percentile(waits, p), 1)
                      for q, p in (("p50", 0.5), ("p90", 0.9), ("max", 1.0))}
    return out


def main(rounds: int = ROUNDS) -> dict:
    from benchmarks.bare import AGENT_MODULES, set_up_sides
    from tests.redis_server import RedisServer
    from tests.services import start_worker

    server = RedisServer().start()
    worker = None
    try:
        sleep_task = set_up_sides(server.url).tasks["bench.sleep"]
        import tasks
        from tasks.celeryapp import runtime

        tasks.load_agents([CLOCK])  # this process submits its agent; its clock runs in the worker

        worker = start_worker(server.url, name="bench-io-start", concurrency=RUNS,
                              extra_args=["--pool", "threads"],
                              RUNCAST_AGENTS=f"{AGENT_MODULES},{CLOCK}")
        rt, meter = runtime(), CpuMeter(worker.proc.pid, server.process.pid)

        def clock() -> dict[str, dict[str, float]]:
            run_id = tasks.submit("bench_start_clock", {})
            rt.store.wait(run_id, 30)
            return tasks.get_run(run_id)["output"]

        def runcast() -> dict[str, float]:
            submitted = submit_at_once(lambda: tasks.submit("bench_io", {}), RUNS)
            for run_id in submitted:
                rt.store.wait(run_id, 60)
            return submitted

        def bare() -> dict[str, float]:
            submitted = submit_at_once(sleep_task.apply_async, RUNS)
            for result in submitted:
                result.get(timeout=60)
            return {result.id: at for result, at in submitted.items()}

        runcast(), bare()  # warm-up: every pool thread started, connections opened
        per_round = []
        for i in range(rounds):
            r = {}
            for name, side in (("runcast", runcast), ("bare", bare)):
                settle(meter)
                clock()  # clears the marks
                submitted = side()
                r[name] = stages(clock(), submitted)
            per_round.append(r)
            print(f"round {i + 1}/{rounds} (ms, p50/p90/max): " + "; ".join(
                f"{name} " + ", ".join(f"{stage} {v['p50']:.0f}/{v['p90']:.0f}/{v['max']:.0f}"
                                       for stage, v in r[name].items())
                for name in ("runcast", "bare")), flush=True)
    finally:
        if worker is not None:
            worker.stop()
        server.cleanup()
    return {"runs": RUNS, "rounds": per_round}


if __name__ == "__main__":
    print(json.dumps(main(*[int(a) for a in sys.argv[1:2]]), indent=2))
