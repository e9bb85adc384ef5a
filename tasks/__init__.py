"""The Celery side of runcast: agents, runs, cancellation. `celery -A tasks worker` finds `app`."""

from tasks.celeryapp import app
from tasks.errors import (
    BrokerUnavailable,
    InputTooLarge,
    InvalidRequest,
    RunConflict,
    RunNotFound,
    UnknownAgent,
)
from tasks.registry import agent, all_agents, get_agent
from tasks.runtime import configure, load_agents
from tasks.runtime import settings as _settings
from tasks.service import (
    batch_status,
    cancel,
    cancel_batch,
    get_run,
    list_runs,
    submit,
    submit_batch,
    wait,
)
from tasks.settings import Settings

_settings()  # read the environment once, at import: this is the worker's edge

__all__ = [
    "BrokerUnavailable", "InputTooLarge", "InvalidRequest", "RunConflict", "RunNotFound",
    "Settings", "UnknownAgent", "agent", "all_agents", "app", "batch_status", "cancel",
    "cancel_batch", "configure", "get_agent", "get_run", "list_runs", "load_agents", "submit",
    "submit_batch", "wait",
]
