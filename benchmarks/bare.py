"""Tasks the runs benchmark compares: a bare Celery no-op and a no-op runcast agent.

The benchmark's worker imports this module (RUNCAST_AGENTS="tasks.demo,benchmarks.bare"), and
so does the benchmark process.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from streaming import StreamContext
from tasks.celeryapp import app
from tasks.registry import agent


@app.task(name="bench.noop", ignore_result=False)
def noop(payload: Any = None) -> Any:
    """A plain Celery task: its result goes to the Redis result backend."""
    return {}


@agent("bench_noop", description="Does nothing (benchmarks)")
def bench_noop(payload: Any) -> dict:
    return {}


IO_STEPS = 20
IO_STEP_S = 0.1


@app.task(name="bench.sleep", ignore_result=False)
def sleep_task(seconds: float = IO_STEPS * IO_STEP_S) -> dict:
    """A plain Celery task that only waits, as long as the I/O-bound agent awaits in all."""
    time.sleep(seconds)
    return {}


@agent("bench_io", description="Awaits 20 x 100 ms, a token after each (benchmarks)")
async def bench_io(payload: Any, context: StreamContext) -> dict:
    for i in range(IO_STEPS):
        await asyncio.sleep(IO_STEP_S)
        await context.emit_token(f"t{i} ")
    return {"steps": IO_STEPS}
