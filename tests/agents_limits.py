"""Agents of the Celery time limit tests (tests/test_time_limits.py), on queues only that module's
workers consume: `limits` (a worker with --soft-time-limit/--time-limit) and `limits_agent` (a
worker without; the agents carry their own limits)."""

from __future__ import annotations

import asyncio
import time

from streaming import StreamContext
from tasks.registry import agent


def _sleep(seconds: float, context: StreamContext) -> dict:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        time.sleep(0.02)
        context.check_cancelled()
    return {"slept": seconds}


@agent("l_sleep", description="Cooperative sleep", queue="limits")
def l_sleep(payload: dict, context: StreamContext) -> dict:
    return _sleep(payload["seconds"], context)


@agent("l_async_sleep", description="asyncio.sleep, cancelled as a task", queue="limits")
async def l_async_sleep(payload: dict, context: StreamContext) -> dict:
    await asyncio.sleep(payload["seconds"])
    return {"slept": payload["seconds"]}


@agent("l_block", description="time.sleep, deaf to its cancellation", queue="limits")
def l_block(payload: dict) -> dict:
    time.sleep(payload["seconds"])
    return {"blocked": payload["seconds"]}


@agent("l_agent_soft", description="Cooperative sleep under a soft limit of 1 s",
       queue="limits_agent", soft_time_limit=1)
def l_agent_soft(payload: dict, context: StreamContext) -> dict:
    return _sleep(payload["seconds"], context)


@agent("l_agent_hard", description="time.sleep under a hard limit of 1 s", queue="limits_agent",
       time_limit=1)
def l_agent_hard(payload: dict) -> dict:
    time.sleep(payload["seconds"])
    return {"blocked": payload["seconds"]}


@agent("l_agent_free", description="Cooperative sleep, no limit of its own",
       queue="limits_agent")
def l_agent_free(payload: dict, context: StreamContext) -> dict:
    return _sleep(payload["seconds"], context)


@agent("l_idle", description="On a queue no worker consumes, with a soft limit of 1 s",
       queue="limits_idle", soft_time_limit=1)
def l_idle(payload: dict) -> dict:
    return {}
