"""The agent registry: the only way a name from a request reaches code."""

from __future__ import annotations

import inspect
import re
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from streaming.context import StreamContext
from streaming.filters import EventsFilter

AGENT_TASK_PREFIX = "runcast.agent."


@dataclass(frozen=True)
class AgentSpec:
    name: str
    handler: Callable[..., Any]
    description: str = ""
    events: str | None = None  # None: the deployment's default (RUNCAST_EVENTS)
    timeout: float | None = None
    queue: str = "default"
    rate_limit: str | None = None
    context_param: str | None = field(default=None)  # the parameter that receives the context
    is_async: bool = False
    # Celery's time limits of the agent's task (seconds; None: the worker's); see tasks/time_limits
    soft_time_limit: float | None = None
    time_limit: float | None = None

    @property
    def task_name(self) -> str:
        return AGENT_TASK_PREFIX + self.name

    def info(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "events": self.events,
            "timeout": self.timeout,
            "queue": self.queue,
        }


_agents: dict[str, AgentSpec] = {}
# Called with each new spec (tasks.celeryapp makes it a Celery task).
_on_register: list[Callable[[AgentSpec], None]] = []


def context_parameter(handler: Callable[..., Any]) -> str | None:
    """The name of the handler's parameter that takes the StreamContext, if any: one named
    `context`, or one annotated `StreamContext`, `StreamContext | None` or
    `Optional[StreamContext]`, as an object or as a postponed (string) annotation."""
    for param in list(inspect.signature(handler).parameters.values())[1:]:
        if param.name == "context" or _names_context(param.annotation):
            return param.name
    return None


_TYPING_WORDS = {"Optional", "Union", "None", "typing", "NoneType"}


def _names_context(annotation: Any) -> bool:
    if isinstance(annotation, str):  # `from __future__ import annotations`, or quoted
        names = {word.rsplit(".", 1)[-1] for word in re.findall(r"[A-Za-z_][\w.]*", annotation)}
        return "StreamContext" in names and names <= _TYPING_WORDS | {"StreamContext"}
    if isinstance(annotation, type):
        return issubclass(annotation, StreamContext)
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
        return len(args) == 1 and _names_context(args[0])
    return False


def agent(
    name: str,
    *,
    description: str = "",
    events: str | list[str] | None = None,
    timeout: float | None = None,
    queue: str = "default",
    rate_limit: str | None = None,
    soft_time_limit: float | None = None,
    time_limit: float | None = None,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register `handler(payload, context=None)` as agent `name`; its task is runcast.agent.NAME."""
    if not isinstance(name, str) or not name or len(name) > 100:
        raise ValueError(f"invalid agent name {name!r}")
    spec_events = None
    if events is not None:
        spec_events = EventsFilter(events).spec
    if timeout is not None and timeout <= 0:
        raise ValueError("an agent's timeout must be positive")
    for option, seconds in (("soft_time_limit", soft_time_limit), ("time_limit", time_limit)):
        if seconds is not None and (isinstance(seconds, bool) or seconds <= 0):
            raise ValueError(f"an agent's {option} must be positive")

    def register(handler: Callable[..., Any]) -> Callable[..., Any]:
        if name in _agents:
            raise ValueError(f"agent {name!r} is registered twice")
        spec = AgentSpec(
            name=name,
            handler=handler,
            description=description or (inspect.getdoc(handler) or "").split("\n")[0],
            events=spec_events,
            timeout=timeout,
            queue=queue,
            rate_limit=rate_limit,
            context_param=context_parameter(handler),
            is_async=inspect.iscoroutinefunction(handler),
            soft_time_limit=soft_time_limit,
            time_limit=time_limit,
        )
        _agents[name] = spec
        for hook in _on_register:
            hook(spec)
        return handler

    return register


def get_agent(name: str) -> AgentSpec | None:
    return _agents.get(name) if isinstance(name, str) else None


def all_agents() -> list[AgentSpec]:
    return sorted(_agents.values(), key=lambda spec: spec.name)


def on_register(hook: Callable[[AgentSpec], None]) -> None:
    """Call `hook` for every agent registered so far and from now on."""
    _on_register.append(hook)
    for spec in list(_agents.values()):
        hook(spec)
