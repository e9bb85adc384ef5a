"""The demo agents (RUNCAST_AGENTS=tasks.demo)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from streaming import StreamContext
from tasks.registry import agent


def _number(payload: dict, name: str, default: float) -> float:
    value = payload.get(name, default) if isinstance(payload, dict) else default
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{name} must be a number")  # noqa: TRY004 - a bad input value
    return value


@agent("echo", description="Return the input unchanged")
def echo(payload: Any) -> dict:
    return {"echo": payload}


@agent("countdown", description="One progress event per step")
def countdown(payload: dict, context: StreamContext) -> dict:
    steps = int(_number(payload, "steps", 5))
    delay = _number(payload, "delay", 0.1)
    for i in range(1, steps + 1):
        time.sleep(delay)
        context.sync_emit_progress(step=f"{i}/{steps}", progress=i / steps,
                                   message=f"Step {i} of {steps}")
    return {"steps": steps}


def _words(payload: dict) -> list[str]:
    text = payload.get("text", "") if isinstance(payload, dict) else ""
    if not isinstance(text, str):
        raise ValueError("text must be a string")  # noqa: TRY004 - a bad input value
    return text.split()


@agent("tokens", description="One token event per word")
def tokens(payload: dict, context: StreamContext) -> dict:
    words = _words(payload)
    delay = _number(payload, "delay", 0)
    for i, word in enumerate(words):
        if delay:
            time.sleep(delay)
        context.sync_emit_token(word + " ", "stop" if i == len(words) - 1 else None)
    return {"text": payload.get("text", "")}


@agent("async_tokens", description="One token event per word, from an async handler")
async def async_tokens(payload: dict, context: StreamContext) -> dict:
    words = _words(payload)
    delay = _number(payload, "delay", 0)
    for i, word in enumerate(words):
        await asyncio.sleep(delay)
        await context.emit_token(word + " ", "stop" if i == len(words) - 1 else None)
    return {"text": payload.get("text", "")}


@agent("fail", description="Raise ValueError(message)")
def fail(payload: dict) -> dict:
    message = payload.get("message", "failed on purpose") if isinstance(payload, dict) else None
    raise ValueError(message or "failed on purpose")


@agent("sleep", description="Sleep cooperatively, a heartbeat each second")
def sleep(payload: dict, context: StreamContext) -> dict:
    seconds = _number(payload, "seconds", 1.0)
    end = time.monotonic() + seconds
    next_beat = time.monotonic() + 1.0
    while time.monotonic() < end:
        time.sleep(min(0.05, max(0.0, end - time.monotonic())))
        context.check_cancelled()
        if time.monotonic() >= next_beat:
            context.sync_emit_heartbeat()
            next_beat += 1.0
    return {"slept": seconds}


@agent("block", description="One time.sleep(seconds), no emits: only a hard stop ends it early")
def block(payload: dict) -> dict:
    seconds = _number(payload, "seconds", 1.0)
    time.sleep(seconds)
    return {"blocked": seconds}


@agent("custom", description="Emit custom analysis events")
def custom(payload: dict, context: StreamContext) -> dict:
    document_id = payload.get("document_id") if isinstance(payload, dict) else None
    context.sync_emit("custom:analysis_started", document_id=document_id)
    context.sync_emit("custom:analysis_complete", document_id=document_id, findings=3)
    return {"answer": "done"}


@agent("chatty", description="n token events as fast as it can")
def chatty(payload: dict, context: StreamContext) -> dict:
    n = int(_number(payload, "n", 100))
    for i in range(n):
        context.sync_emit_token(f"t{i} ")
    return {"n": n}
