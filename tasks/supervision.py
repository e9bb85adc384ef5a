"""The clock every supervised handler runs under, whatever runs it (a thread, the shared loop).

Past its timeout a run is cancelled with reason `timeout` (and ends failed/timeout); once
cancelled, for whatever reason, its handler has `grace_s` to stop; a handler still running then is
abandoned (left to end alone; the run ends without it).

Celery's soft time limit (`--soft-time-limit`, a task's `soft_time_limit`) raises
SoftTimeLimitExceeded in the thread that runs the task: the one keeping this clock, never the
handler's. It is taken as the run's timeout, the same cancel with reason `timeout`, grace and
abandon, so the run ends failed/timeout instead of the exception leaving it `running`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from celery.exceptions import SoftTimeLimitExceeded

from streaming.context import StreamContext

TIMEOUT_REASON = "timeout"


@dataclass
class Supervised:
    """How the handler ended, or that it had to be left behind (`abandoned`)."""

    output: Any = None
    error: BaseException | None = None
    timed_out: bool = False
    soft_time_limit: bool = False  # timed out by Celery's soft time limit, not the run's timeout
    abandoned: bool = False
    done: threading.Event = field(default_factory=threading.Event)


def keep_time(ctx: StreamContext, result: Supervised, *, timeout_s: float, grace_s: float,
              wait: Callable[[float], object]) -> Supervised:
    """Return `result` once the handler is done, or abandoned. `wait(seconds)` blocks at most
    that long, and returns early when the handler may have ended or the run been cancelled."""
    deadline = time.monotonic() + timeout_s
    hard_stop_at: float | None = None
    while True:
        try:
            wait(max((hard_stop_at or deadline) - time.monotonic(), 0.0))
        except SoftTimeLimitExceeded:
            if not result.timed_out and not ctx.cancelled and not result.done.is_set():
                result.timed_out = result.soft_time_limit = True
                ctx.request_cancel(TIMEOUT_REASON)
        if result.done.is_set():
            return result
        now = time.monotonic()
        if not result.timed_out and not ctx.cancelled and now >= deadline:
            result.timed_out = True
            ctx.request_cancel(TIMEOUT_REASON)
        if ctx.cancelled and hard_stop_at is None:
            hard_stop_at = now + grace_s
        elif hard_stop_at is not None and now >= hard_stop_at:
            result.abandoned = not result.done.is_set()
            if result.abandoned:
                return result
