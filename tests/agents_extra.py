"""Agents only the run tests use (RUNCAST_AGENTS="tasks.demo,tests.agents_extra").

None of them is on the `default` queue, so the session worker (which loads tasks.demo only)
never receives one: a worker started with `-Q extra` (and the test process) load this module.
"""

from __future__ import annotations

import time
from typing import Any

from streaming import StreamContext
from tasks.registry import agent

MARK = "runcast-test:ran:{run_id}"  # set by a handler that ran (the queued-cancel tests)
SWALLOWED = "runcast-test:swallowed:{run_id}"
EXITED = "runcast-test:exited:{run_id}"


def _mark(key: str, run_id: str) -> None:
    from tasks.celeryapp import runtime

    runtime().redis.set(key.format(run_id=run_id), "1", ex=3600)


def _sleep(seconds: float, context: StreamContext) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        time.sleep(0.02)
        context.check_cancelled()


@agent("t_idle", description="On a queue no worker consumes", queue="idle")
def t_idle(payload: Any, context: StreamContext) -> dict:
    _mark(MARK, context.run_id)
    return {}


@agent("t_gated", description="On a queue a worker consumes only when told to", queue="gate")
def t_gated(payload: Any, context: StreamContext) -> dict:
    _mark(MARK, context.run_id)
    return {}


@agent("t_not_json", description="Return a value that is not JSON", queue="extra")
def t_not_json(payload: dict) -> Any:
    kind = payload.get("kind")
    if kind == "set":
        return {"values": {1, 2, 3}}
    if kind == "nan":
        return {"value": float("nan")}
    return object()


@agent("t_limited", description="Cooperative sleep with an agent timeout of 1 s", timeout=1,
       queue="extra")
def t_limited(payload: dict, context: StreamContext) -> dict:
    _sleep(payload.get("seconds", 30), context)
    return {"slept": True}


@agent("t_swallow", description="Catches Exception around every cancellation check",
       queue="extra")
def t_swallow(payload: dict, context: StreamContext) -> dict:
    try:
        end = time.monotonic() + payload.get("seconds", 60)
        while time.monotonic() < end:
            try:
                time.sleep(0.02)
                context.check_cancelled()
                context.sync_emit_progress(step="loop", progress=0.0, message="looping")
            except Exception:  # noqa: BLE001 - the point: it must not catch RunCancelled
                _mark(SWALLOWED, context.run_id)
        return {"finished": True}
    finally:
        _mark(EXITED, context.run_id)


@agent("t_quiet", description="Registered with events='minimal'", events="minimal",
       queue="extra")
def t_quiet(payload: dict, context: StreamContext) -> dict:
    context.sync_emit_progress(step="one", progress=0.5, message="half")
    context.sync_emit_token("hi ", "stop")
    return {"ok": True}


@agent("t_cancelled_as_it_returns", queue="extra",
       description="Flags its own run as a cancel does, then returns before any notice")
def t_cancelled_as_it_returns(payload: dict, context: StreamContext) -> dict:
    """What a cancel that lands as the handler returns leaves behind: the record flagged (the
    API has answered 202), the notice to the worker not there yet."""
    import json

    from tasks.celeryapp import runtime
    from tasks.redis_store import run_key

    runtime().redis.hset(run_key(context.run_id), mapping={
        "cancel_requested": "true", "cancel_reason": json.dumps(payload.get("reason"))})
    return {"finished": True}
