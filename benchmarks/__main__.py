"""`make bench`: every benchmark, each against its own private Redis, figures beside baselines."""

import importlib
import json
import os
import platform
import subprocess
import sys
from datetime import UTC, datetime

BENCHMARKS = ["benchmarks.emit", "benchmarks.runs", "benchmarks.sse", "benchmarks.batches"]
# issue 14's three goals, each a ratio against a baseline measured in the same run
GOALS = ["benchmarks.sse_live", "benchmarks.http_path", "benchmarks.io_bound"]


def main() -> int:
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    print(f"runcast benchmarks, {stamp}, {platform.node()} ({platform.machine()}, "
          f"Python {platform.python_version()})")
    results = {}
    for name in sys.argv[1:] or BENCHMARKS:
        print(f"\n== {name}")
        results[name] = importlib.import_module(name).main()
    for name in [] if sys.argv[1:] else GOALS:
        print(f"\n== {name}", flush=True)
        results[name] = in_own_process(name)
    print("\n" + json.dumps(results, indent=2, default=str))
    print_goals(results)
    return 0


def in_own_process(name: str) -> dict | None:
    """Run `python -m name` (a fresh Celery app and Redis per benchmark), echo its output and
    return the JSON it prints last."""
    process = subprocess.run([sys.executable, "-m", name], stdout=subprocess.PIPE, text=True,
                             check=False)
    output = process.stdout
    start = output.rfind("\n{\n")
    summary = output[:start] if start >= 0 else output
    print(summary, flush=True)
    if process.returncode != 0 or start < 0:
        print(f"{name} failed (exit status {process.returncode})", flush=True)
        return None
    return json.loads(output[start + 1:])


def print_goals(results: dict) -> None:
    """The three ratios of issue 14 with their baselines, and the machine's load."""
    lines = []
    if fan := results.get("benchmarks.sse_live"):
        ours, ref = fan["runcast"], fan["reference"]
        lines.append(
            f"fan-out ({fan['subscribers']} subscribers join a live {fan['words']}-token run): "
            f"{ours['events_per_s']:,} events/s vs minimal SSE server {ref['events_per_s']:,}/s "
            f"= {fan['events_per_s_ratio']}x (goal >= 0.8); first event p50 "
            f"{ours['first_event_p50_s']} s (reference {ref['first_event_p50_s']} s; goal < 1 s); "
            f"complete logs {ours['complete_gap_free_logs']}/{fan['subscribers']}; API Redis "
            f"connections {ours['api_redis_connections']}")
    if http := results.get("benchmarks.http_path"):
        lines.append(
            f"HTTP path (POST /runs + GET /wait): {http['runcast_throughput_per_s']}/s vs bare "
            f"Celery {http['bare_throughput_per_s']}/s = {http['throughput_ratio']}x (goal >= "
            f"0.6); p50 {http['runcast_p50_ms']} ms vs {http['bare_p50_ms']} ms "
            f"(+{http['p50_delta_ms']} ms, goal <= 3); CPU per run (all processes) "
            f"{sum(http['cpu_ms_per_run']['runcast'].values()):.2f} ms, of which the API "
            f"{http['cpu_ms_per_run']['runcast'].get('api', 0):.2f} ms, vs "
            f"{sum(http['cpu_ms_per_run']['bare'].values()):.2f} ms; with http.client callers "
            f"instead of httpx (context, not the goal): "
            f"{http['throughput_ratio_lean_callers']}x, p50 +{http['p50_delta_lean_callers_ms']} "
            f"ms")
    if io := results.get("benchmarks.io_bound"):
        lines.append(
            f"I/O-bound ({io['runs']} async runs of 20 x 100 ms at once, one worker process): "
            f"{io['runcast_s']} s vs bare Celery threads {io['bare_s']} s = {io['time_ratio']}x "
            f"(goal <= 1.0; ideal 2 s); worker peak RSS {io['runcast_peak_rss_mb']} MB vs "
            f"{io['bare_peak_rss_mb']} MB; a task's start after its submit, p50: runcast "
            f"{io['runcast_start_lag_ms']:.0f} ms, bare {io['bare_start_lag_ms']:.0f} ms; "
            f"bare Celery writing the same tokens to Redis by hand "
            f"{io['bare_events_s']} s = {io['time_ratio_vs_bare_events']}x; runcast running the "
            f"same agent without its tokens {io['runcast_quiet_s']} s = "
            f"{io['time_ratio_quiet_vs_bare']}x bare (both context, not the goal)")
    if lines:
        print("\nissue 14 goals (load average now "
              f"{', '.join(f'{x:.1f}' for x in os.getloadavg())}):")
        for line in lines:
            print("  " + line)


if __name__ == "__main__":
    sys.exit(main())
