"""The Celery side of runcast: agents, runs, cancellation. `celery -A tasks worker` finds `app`.

The functions here (`submit`, `get_run`, `wait`, `cancel`, ...) act on this process's runtime
(tasks.celeryapp.runtime()); tasks.service holds the same functions taking a Runtime first.
"""

from typing import Any

from tasks import service
from tasks.celeryapp import app, configure, load_agents, runtime
from tasks.celeryapp import settings as _settings
from tasks.errors import (
    BrokerUnavailable,
    InputTooLarge,
    InvalidRequest,
    RunConflict,
    RunNotFound,
    UnknownAgent,
)
from tasks.registry import agent, all_agents, get_agent
from tasks.runtime import Runtime
from tasks.settings import Settings

_settings()  # read the environment once, at import: this is the worker's edge


def submit(agent: str, input: Any = None, **options: Any) -> str:
    """Validate, store the run as queued, enqueue it; returns the run id."""
    return service.submit(runtime(), agent, input, **options)


def submit_batch(runs: list[dict[str, Any]], metadata: dict | None = None,
                 webhook: str | None = None) -> dict[str, Any]:
    return service.submit_batch(runtime(), runs, metadata, webhook)


def get_run(run_id: str) -> dict[str, Any] | None:
    return service.get_run(runtime(), run_id)


def wait(run_id: str, timeout: float | None = None) -> dict[str, Any]:
    return service.wait(runtime(), run_id, timeout)


def cancel(run_id: str, reason: str | None = None) -> dict[str, Any]:
    return service.cancel(runtime(), run_id, reason)


def list_runs(**filters: Any) -> dict[str, Any]:
    return service.list_runs(runtime(), **filters)


def batch_status(batch_id: str) -> dict[str, Any]:
    return service.batch_status(runtime(), batch_id)


def cancel_batch(batch_id: str, reason: str | None = None) -> dict[str, Any]:
    return service.cancel_batch(runtime(), batch_id, reason)


__all__ = [
    "BrokerUnavailable", "InputTooLarge", "InvalidRequest", "RunConflict", "RunNotFound",
    "Runtime", "Settings", "UnknownAgent", "agent", "all_agents", "app", "batch_status", "cancel",
    "cancel_batch", "configure", "get_agent", "get_run", "list_runs", "load_agents", "runtime",
    "submit", "submit_batch", "wait",
]
