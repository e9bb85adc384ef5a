"""Agents only the hostile-input suite loads (RUNCAST_AGENTS="tasks.demo,tests.reliability.hostile_agents").

Its worker and API run on the suite's own Redis, so no other worker ever receives these tasks.
"""

from __future__ import annotations

from typing import Any

from streaming import StreamContext
from tasks.registry import agent


@agent("h_big_event", description="Emit one custom event carrying `size` bytes of text")
def h_big_event(payload: dict, context: StreamContext) -> dict:
    size = int(payload.get("size", 5 * 1024 * 1024))
    context.sync_emit("custom:big", blob="x" * size)
    return {"size": size}


@agent("h_big_output", description="Return `size` bytes of text")
def h_big_output(payload: dict) -> dict:
    return {"blob": "y" * int(payload.get("size", 5 * 1024 * 1024))}


@agent("h_deep_output", description="Return a list nested `depth` levels deep")
def h_deep_output(payload: dict) -> Any:
    value: Any = []
    for _ in range(int(payload.get("depth", 10))):
        value = [value]
    return value


@agent("h_bad_error", description="Raise an exception whose message is not valid Unicode")
def h_bad_error(payload: dict) -> dict:
    raise ValueError("bad \ud800 message")


@agent("h_bad_output", description="Return a string holding a lone surrogate")
def h_bad_output(payload: dict) -> dict:
    return {"text": "bad \udfff output"}
