"""A clock on each task's way from the worker's consumer to its start (benchmarks.io_start).

Loaded by the probe's worker as an agent module (RUNCAST_AGENTS; the probe loads it too, to
submit its agent), never by a runcast service: it wraps Celery's worker Request, so that in the
worker each task, runcast's or bare, has recorded when
  - received: the consumer made its Request (the message was fetched and decoded);
  - pooled:   the Request was handed to the pool;
  - accepted: a pool thread began it (Celery's on_accepted: the task-started event is sent);
  - begun:    on_accepted returned, the task body is next (a runcast run then claims).
`bench_start_clock` (an agent) answers with what was recorded since it last answered.
"""

from __future__ import annotations

import time
from typing import Any

from celery.worker import request, strategy

from tasks.registry import agent

_marks: dict[str, dict[str, float]] = {}  # task id -> mark -> time.time()


def _mark(task_id: str, name: str) -> None:
    _marks.setdefault(task_id, {})[name] = time.time()


def _wrap_request_classes() -> None:
    if getattr(strategy.create_request_cls, "start_clock", False):
        return
    make_class = strategy.create_request_cls

    def create_request_cls(*args: Any, **kwargs: Any) -> type:
        cls = make_class(*args, **kwargs)  # a subclass of Request per task type
        init, pooled = cls.__init__, cls.execute_using_pool

        def __init__(self, *a: Any, **kw: Any) -> None:
            init(self, *a, **kw)
            _mark(self.id, "received")

        def execute_using_pool(self, pool: Any, **kw: Any) -> Any:
            _mark(self.id, "pooled")
            return pooled(self, pool, **kw)

        cls.__init__, cls.execute_using_pool = __init__, execute_using_pool
        return cls

    create_request_cls.start_clock = True
    strategy.create_request_cls = create_request_cls
    accepted = request.Request.on_accepted

    def on_accepted(self, *args: Any, **kwargs: Any) -> Any:
        _mark(self.id, "accepted")
        try:
            return accepted(self, *args, **kwargs)
        finally:
            _mark(self.id, "begun")

    request.Request.on_accepted = on_accepted


_wrap_request_classes()


@agent("bench_start_clock", description="The start clock's marks since the last call (probe)")
def bench_start_clock(payload: Any) -> dict[str, dict[str, float]]:
    marks = dict(_marks)
    _marks.clear()
    return marks
