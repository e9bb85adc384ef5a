"""Tasks the benchmarks compare: bare Celery tasks and runcast agents doing the same.

The benchmark's worker imports this module (RUNCAST_AGENTS="tasks.demo,benchmarks.bare"): it
executes both kinds. The bare side SENDS its tasks through `stock_client(redis_url)`, a Celery
app as a user of plain Celery has it (kombu's own Redis transport), not through runcast's app,
whose Redis transport is runcast's own (tasks/redis_transport.py).
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from typing import Any

import redis
from celery import Celery

from streaming import StreamContext
from tasks.celery_config import configure_app
from tasks.celeryapp import app
from tasks.registry import agent
from tasks.settings import Settings


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


_redis: list[redis.Redis] = []
_redis_lock = threading.Lock()


def _events_client() -> redis.Redis:
    """One client per worker process, made on first use: a thread-safe connection pool with
    room for a connection per thread of the benchmark's pool (redis-py's default is 100)."""
    with _redis_lock:
        if not _redis:
            from tasks.celeryapp import settings

            _redis.append(redis.Redis.from_url(settings().redis_url, max_connections=2000))
        return _redis[0]


@app.task(name="bench.sleep_emit", ignore_result=False)
def sleep_emit_task(steps: int = IO_STEPS, step_s: float = IO_STEP_S) -> dict:
    """What a plain Celery user writes to give a task the I/O-bound agent's durable event log
    by hand: after each wait, the token appended to a Redis stream of the task's own and
    announced on its channel, one pipelined round trip per token."""
    client, task_id = _events_client(), uuid.uuid4().hex
    for i in range(steps):
        time.sleep(step_s)
        event = json.dumps({"seq": i + 1, "type": "token", "data": {"text": f"t{i} "},
                            "ts": time.time()})
        with client.pipeline(transaction=False) as pipe:
            pipe.xadd(f"bench:events:{task_id}", {"event": event})
            pipe.publish(f"bench:live:{task_id}", event)
            pipe.execute()
    return {"steps": steps}


@agent("bench_io", description="Awaits 20 x 100 ms, a token after each (benchmarks)")
async def bench_io(payload: Any, context: StreamContext) -> dict:
    for i in range(IO_STEPS):
        await asyncio.sleep(IO_STEP_S)
        await context.emit_token(f"t{i} ")
    return {"steps": IO_STEPS}


@agent("bench_io_quiet", description="bench_io without its tokens (benchmarks)")
async def bench_io_quiet(payload: Any) -> dict:
    for _ in range(IO_STEPS):
        await asyncio.sleep(IO_STEP_S)
    return {"steps": IO_STEPS}


AGENT_MODULES = "tasks.demo,benchmarks.bare"  # what each benchmark's worker and process load


def set_up_sides(redis_url: str) -> Celery:
    """This process made ready for a benchmark against `redis_url`: runcast configured with
    AGENT_MODULES for the runcast side, and the plain Celery client the bare side sends with."""
    import tasks

    tasks.configure(Settings(redis_url=redis_url, agents=AGENT_MODULES))
    tasks.load_agents()
    return stock_client(redis_url)


def stock_client(redis_url: str) -> Celery:
    """The bare side's client app: runcast's Celery settings (JSON only, task-sent events, the
    Redis result backend) on kombu's stock Redis transport. Its tasks only send: `bench.noop`,
    `bench.sleep` and `bench.sleep_emit` run in the benchmark's worker, registered above."""
    client = Celery("bare")
    configure_app(client, Settings(redis_url=redis_url, agents=""))
    client.conf.update(broker_transport=None, imports=[])
    client.task(name="bench.noop", ignore_result=False, shared=False)(noop.run)
    client.task(name="bench.sleep", ignore_result=False, shared=False)(sleep_task.run)
    client.task(name="bench.sleep_emit", ignore_result=False, shared=False)(sleep_emit_task.run)
    return client
