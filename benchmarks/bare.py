"""Tasks the runs benchmark compares: a bare Celery no-op and a no-op runcast agent.

The benchmark's worker imports this module (RUNCAST_AGENTS="tasks.demo,benchmarks.bare"), and
so does the benchmark process.
"""

from __future__ import annotations

from typing import Any

from tasks.celeryapp import app
from tasks.registry import agent


@app.task(name="bench.noop", ignore_result=False)
def noop(payload: Any = None) -> Any:
    """A plain Celery task: its result goes to the Redis result backend."""
    return {}


@agent("bench_noop", description="Does nothing (benchmarks)")
def bench_noop(payload: Any) -> dict:
    return {}
