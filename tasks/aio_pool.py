"""Async handlers of a threads-pool worker on one shared event loop per process.

Under `runcast worker --io-bound` (Celery's threads pool, concurrency 1,000) a process runs many
I/O-bound agents at once. Giving each run a thread *and* an event loop of its own (what
`asyncio.run` per run does) costs a loop, a selector and a self-pipe per run and a thread switch
per await; here every async handler is a task on one loop, running in one daemon thread, and the
Celery thread of the run only waits, woken by the events that matter instead of polling.

The rules stay those of the contract: a cancel cancels the handler's task; past its timeout the
run is cancelled with reason `timeout` and ends failed/timeout; a handler still running
`grace_s` after its cancellation is abandoned (its task is left to end alone, the run ends
cancelled). The Celery thread keeps the clock itself, so a handler that blocks the shared loop
is still timed out and abandoned on time.

A prefork child runs one agent at a time and can be stopped hard by killing it: there async
handlers keep a loop of their own (tasks.execute.call_handler).
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import os
import threading
from typing import Any

from streaming.context import StreamContext, current_context
from streaming.errors import RunCancelled
from tasks.registry import AgentSpec
from tasks.supervision import Supervised, keep_time

log = logging.getLogger(__name__)


def new_loop() -> asyncio.AbstractEventLoop:
    """uvloop's event loop where it is installed (a runtime dependency on CPython/POSIX): its
    timers and callbacks cost a fraction of asyncio's own, and a thousand handlers awaiting
    twenty times a second each are mostly timers and callbacks. Else asyncio's."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


class SharedLoop:
    """One event loop in a daemon thread, started on first use (again after a fork)."""

    def __init__(self) -> None:
        self._reset()
        os.register_at_fork(after_in_child=self._reset)  # the parent's thread is not there

    def _reset(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock = threading.Lock()

    def get(self) -> asyncio.AbstractEventLoop:
        loop = self._loop
        if loop is not None:
            return loop
        with self._lock:
            if self._loop is None:
                ready = threading.Event()
                loop = new_loop()
                threading.Thread(target=self._serve, args=(loop, ready),
                                 name="runcast-async-handlers", daemon=True).start()
                ready.wait()
                self._loop = loop
            return self._loop

    @staticmethod
    def _serve(loop: asyncio.AbstractEventLoop, ready: threading.Event) -> None:
        asyncio.set_event_loop(loop)
        loop.call_soon(ready.set)
        loop.run_forever()


shared_loop = SharedLoop()


def in_prefork_child() -> bool:
    from billiard.process import current_process

    return current_process().name.startswith("ForkPoolWorker")


def applies(spec: AgentSpec) -> bool:
    """Whether this run's handler goes on the shared loop: an async handler outside a prefork
    child (threads pool, solo pool, embedded mode)."""
    return spec.is_async and not in_prefork_child()


async def _handler_task(spec: AgentSpec, payload: Any, ctx: StreamContext, result: Any) -> None:
    kwargs = {spec.context_param: ctx} if spec.context_param else {}
    try:
        with current_context(ctx):
            result.output = await spec.handler(payload, **kwargs)
    except asyncio.CancelledError:
        result.error = RunCancelled(ctx.cancel_reason)
    except BaseException as exc:  # noqa: BLE001 - an agent's failure is a failed run
        result.error = exc
    finally:
        result.done.set()


def supervise_async(spec: AgentSpec, payload: Any, ctx: StreamContext, result: Supervised, *,
                    timeout_s: float, grace_s: float) -> Supervised:
    """Run the async handler as a task on the shared loop; fill and return `result`."""
    loop = shared_loop.get()
    wake = threading.Event()
    done = result.done
    context = contextvars.copy_context()  # the handler's task gets this thread's contextvars
    holder: list[asyncio.Task] = []

    def ended(_task: asyncio.Task) -> None:
        if not done.is_set():  # cancelled before its first step: the handler never ran
            result.error = RunCancelled(ctx.cancel_reason)
            done.set()
        wake.set()

    def start() -> None:
        task = loop.create_task(_handler_task(spec, payload, ctx, result), context=context)
        task.add_done_callback(ended)
        holder.append(task)

    def cancel_task() -> None:  # runs in the loop, after start()
        if holder:
            holder[0].cancel()

    loop.call_soon_threadsafe(start)
    ctx.on_cancel(lambda: (wake.set(), loop.call_soon_threadsafe(cancel_task)))

    def wait(seconds: float) -> None:  # woken by the handler's end or a cancel
        wake.wait(seconds)
        wake.clear()

    keep_time(ctx, result, timeout_s=timeout_s, grace_s=grace_s, wait=wait)
    if result.abandoned:
        log.warning("run %s: its async handler ignored the cancellation; left to end", ctx.run_id)
    return result
