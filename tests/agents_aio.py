"""Async agents of the shared-loop execution mode tests (tests/test_aio_pool.py).

On queue `aio`, which only that module's threads-pool worker consumes.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time

import redis

from streaming import StreamContext
from tasks.registry import agent

QUEUE = "aio"
LEFT_RUNNING = "runcast-test:aio-left-running:{run_id}"  # set by a handler that ignored a cancel


@agent("t_aio_steps", description="Awaits `steps` x `step` s, a token after each", queue=QUEUE)
async def t_aio_steps(payload: dict, context: StreamContext) -> dict:
    steps, step = int(payload.get("steps", 10)), float(payload.get("step", 0.1))
    for i in range(steps):
        await asyncio.sleep(step)
        await context.emit_token(f"t{i} ")
    return {"steps": steps, "loop": id(asyncio.get_running_loop()), "pid": os.getpid(),
            "thread": threading.current_thread().name}


@agent("t_aio_fail", description="Raises after one await", queue=QUEUE)
async def t_aio_fail(payload: dict) -> dict:
    await asyncio.sleep(0.01)
    raise ValueError(payload.get("message", "async failure"))


@agent("t_aio_limited", description="Awaits 30 s with an agent timeout of 1 s", timeout=1,
       queue=QUEUE)
async def t_aio_limited(payload: dict, context: StreamContext) -> dict:
    await context.emit_token("begin ")
    await asyncio.sleep(30)
    return {}


@agent("t_aio_blocking", description="Blocks its event loop (time.sleep), timeout 1 s",
       timeout=1, queue=QUEUE)
async def t_aio_blocking(payload: dict) -> dict:
    time.sleep(float(payload.get("seconds", 3)))  # noqa: ASYNC251 - blocking on purpose
    return {}


@agent("t_aio_stubborn", description="Ignores its cancellation and keeps awaiting", queue=QUEUE)
async def t_aio_stubborn(payload: dict, context: StreamContext) -> dict:
    await context.emit_token("begin ")
    end = time.monotonic() + float(payload.get("seconds", 6))
    while time.monotonic() < end:
        try:
            await asyncio.sleep(0.05)
        except asyncio.CancelledError:
            client = redis.Redis.from_url(os.environ["REDIS_URL"])
            client.set(LEFT_RUNNING.format(run_id=context.run_id), 1, ex=60)
            client.close()
    return {"finished": True}


@agent("t_aio_gc", description="The worker process's garbage collector settings", queue=QUEUE)
async def t_aio_gc(payload: dict) -> dict:
    import gc

    return {"frozen": gc.get_freeze_count(), "threshold": list(gc.get_threshold())}
