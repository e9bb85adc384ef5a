"""Sending one execution of a run to the broker."""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any

from celery import Celery

from tasks import registry
from tasks.errors import BrokerUnavailable
from tasks.monitor import task_reprs


def enqueue(app: Celery, run_id: str, agent: str, attempt: int = 1, producer: Any = None,
            queue: str | None = None, input_json: str | None = None) -> None:
    """Hand one execution of a run to `app`'s broker; the Celery task id is the run id.

    A process that does not load the agent (a reaper in a worker with other RUNCAST_AGENTS)
    sends the task by name to `queue`, the one recorded with the run. Flower shows the run id
    and a preview of `input_json` (the run's input) as the task's arguments (tasks.monitor).
    """
    spec = registry.get_agent(agent)
    shown = task_reprs(run_id, attempt, input_json)
    try:
        if producer is not None:
            _send(app, spec, agent, run_id, attempt, queue, producer, shown)
            return
        with app.producer_or_acquire() as own, one_round_trip(own):
            _send(app, spec, agent, run_id, attempt, queue, own, shown)
    except Exception as exc:
        raise BrokerUnavailable(f"the broker did not take the run: {exc}") from exc


def _send(app: Celery, spec: registry.AgentSpec | None, agent: str, run_id: str, attempt: int,
          queue: str | None, producer: Any, shown: dict[str, str]) -> None:
    if spec is None or spec.task_name not in app.tasks:
        app.send_task(registry.AGENT_TASK_PREFIX + agent, args=[run_id, attempt],
                      task_id=run_id, queue=queue or (spec.queue if spec else "default"),
                      producer=producer, **shown)
    else:
        app.tasks[spec.task_name].apply_async(args=[run_id, attempt], task_id=run_id,
                                              queue=spec.queue, producer=producer, **shown)


def one_round_trip(producer: Any, max_size: int = 2) -> Any:
    """kombu's publish batch (kombu 5.7+): a run's message and its task-sent event (Flower's)
    go to a Redis broker in one pipelined round trip instead of one each; other brokers and
    older kombu send them one by one. `max_size`: commands held before a flush."""
    batch = getattr(producer, "batch", None)
    return batch(max_size=max_size) if batch is not None else nullcontext()
