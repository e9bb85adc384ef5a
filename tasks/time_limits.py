"""Celery's own time limits on an agent's task end its run as runcast's timeout does: failed/timeout.

A limit comes from the worker (`--soft-time-limit`, `--time-limit`), the agent
(`@agent(soft_time_limit=..., time_limit=...)`, options of its Celery task) or the message, the
first set of message, task, worker winning (Celery's own order). Celery enforces both on the
prefork pool; gevent and eventlet have only the hard one, the threads and solo pools neither (there
only the run's own `timeout` holds).

- The soft limit raises SoftTimeLimitExceeded in the thread running the task, which keeps the
  run's clock (tasks.supervision): the run is cancelled with reason `timeout` and ends there. When
  it strikes outside that clock (claiming, finishing), `end_outside_supervision` ends it.
- The hard limit kills the pool process: nothing of the run is left to end it, so Celery's call
  of the task's `on_failure` in the worker's main process ends it (`end_past_hard_limit`)
  instead of the reaper, much later, as `worker_lost` after one more attempt.

Every ending here is the store's finish fenced by the attempt: one that comes late, or twice (the
child and the main process, Celery's two failure paths), changes nothing.
"""

from __future__ import annotations

import logging
import weakref
from typing import TYPE_CHECKING, Any

from celery import signals

from streaming.events import envelope_parts, utc_now_iso

if TYPE_CHECKING:
    from celery import Task

    from tasks.runtime import Runtime

log = logging.getLogger(__name__)

# The limits of the worker of each app (its command line), noted in the main process before the
# pool forks, so its children know them too: a pool child is told no limit, only signalled.
_worker_limits: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


@signals.worker_init.connect
def note_worker_limits(sender: Any = None, **_kwargs: Any) -> None:
    """Keep the default limits of a worker (`sender`, a WorkController) for the runs of its app."""
    app = getattr(sender, "app", None)
    if app is not None:
        _worker_limits[app] = (getattr(sender, "time_limit", None),
                               getattr(sender, "soft_time_limit", None))


def soft_limit(task: Task | None) -> float | None:
    """The soft time limit `task` (the running one) runs under, when known."""
    if task is None:
        return None
    limits = getattr(task.request, "timelimit", None) or (None, None)
    worker = _worker_limits.get(task.app, (None, None))
    return limits[1] or task.soft_time_limit or worker[1] or None


def error(kind: str, seconds: float | None) -> dict[str, Any]:
    """The error of a run that hit Celery's `kind` ("soft" or "hard") time limit."""
    name = "soft_time_limit" if kind == "soft" else "time_limit"
    of = f" of {seconds:g} s" if seconds else ""
    message = f"the run took longer than Celery's {kind} time limit{of}"
    if kind == "hard":
        message += "; its worker process was killed"
    return {"error": message, "code": "timeout",
            "details": {"limit": f"celery_{name}", name: seconds}}


def soft_limit_error(task: Task | None = None) -> dict[str, Any]:
    """The error of a run whose handler was timed out by Celery's soft limit (`task` or, when
    None, the task running in this thread)."""
    if task is None:
        from celery import current_task

        task = current_task._get_current_object()
    return error("soft", soft_limit(task))


def finish_timed_out(rt: Runtime, run_id: str, attempt: int, data: dict[str, Any]):
    """Attempt `attempt` of the run ends failed with `data` (its `error` event), unless the run
    has ended already or is another attempt's (fenced)."""
    return rt.store.finish(run_id, "failed", envelope_parts(run_id, "error", data),
                           {"finished_at": utc_now_iso(), "error": data}, attempt=attempt)


def end_outside_supervision(rt: Runtime, task: Task, run_id: str,
                            attempt: int) -> dict[str, Any]:
    """The soft limit struck while the run was claimed or finished, not while its handler ran:
    end it failed/timeout if still running; the execution's result either way."""
    data = soft_limit_error(task)
    done = finish_timed_out(rt, run_id, attempt, data)
    log.warning("run %s attempt %s: Celery's soft time limit outside the handler (%s)", run_id,
                attempt, done.state)
    if done.ok:
        return {"run_id": run_id, "status": "failed", "error": data}
    return {"run_id": run_id, "status": done.status}


def end_past_hard_limit(rt: Runtime, args: Any, kwargs: Any, exc: BaseException) -> None:
    """In the worker's main process, once Celery has killed the process running the run."""
    args, kwargs = list(args or ()), dict(kwargs or {})
    if not args:
        return
    run_id = args[0]
    attempt = args[1] if len(args) > 1 else kwargs.get("attempt", 1)
    seconds = exc.args[0] if exc.args and isinstance(exc.args[0], int | float) else None
    try:
        done = finish_timed_out(rt, run_id, int(attempt), error("hard", seconds))
    except Exception:  # Celery's timeout handling must go on (ack the message); the reaper remains
        log.warning("run %s: could not end it after Celery's hard time limit", run_id,
                    exc_info=True)
        return
    log.warning("run %s attempt %s hit Celery's hard time limit: %s", run_id, attempt,
                "ended failed/timeout" if done.ok else f"already {done.status}")
