"""Each agent as a Celery task of an app (`runcast.agent.<name>`), run on a given runtime."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from celery import Celery
from celery.exceptions import SoftTimeLimitExceeded, TimeLimitExceeded

from tasks import monitor, registry, time_limits
from tasks.celery_config import routes
from tasks.dispatch import register_dispatch_task
from tasks.execute import execute_run

if TYPE_CHECKING:
    from tasks.runtime import Runtime


def register_agent_task(app: Celery, spec: registry.AgentSpec,
                        runtime: Callable[[], Runtime]) -> None:
    """The task executing `spec`'s runs on `app`; `runtime()` gives the runtime they use."""

    def run(self, run_id: str, attempt: int = 1):
        rt = runtime()
        try:
            result = execute_run(rt, spec, self, run_id, attempt)
        except SoftTimeLimitExceeded:  # struck outside the handler's supervision
            result = time_limits.end_outside_supervision(rt, self, run_id, attempt)
        end = monitor.ending(self, result, rt)  # Flower mirrors the run (tasks/monitor.py)
        if end is not None:
            raise end
        return result

    def on_failure(self, exc, task_id, args, kwargs, einfo) -> None:
        """Celery calls this in the worker's main process once the hard time limit has killed
        the process running the task (and in that process for any other failure)."""
        if isinstance(exc, TimeLimitExceeded):
            time_limits.end_past_hard_limit(runtime(), args, kwargs, exc)

    routes(app)[spec.task_name] = {"queue": spec.queue}  # Celery's routing, per agent
    run.__name__ = f"agent_{spec.name}"
    run.__doc__ = spec.description
    app.task(
        name=spec.task_name,
        bind=True,
        shared=False,  # a task of this app only: another runtime's app has its own
        acks_late=True,
        reject_on_worker_lost=True,
        rate_limit=spec.rate_limit,
        soft_time_limit=spec.soft_time_limit,  # None: the worker's (Celery's own fallback)
        time_limit=spec.time_limit,
        on_failure=on_failure,
        ignore_result=True,
        max_retries=0,
        throws=(monitor.RunFailed,),  # an expected ending: logged without a traceback
    )(run)


def serve_agents(app: Celery, runtime: Callable[[], Runtime]) -> None:
    """Every agent, registered now or later, as a task of `app`; and the batch dispatch task."""
    registry.on_register(lambda spec: register_agent_task(app, spec, runtime))
    register_dispatch_task(app, runtime)
