"""Sending one execution of a run to the broker."""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any

from celery import Celery
from kombu import Producer

from tasks import registry
from tasks.errors import BrokerUnavailable
from tasks.monitor import task_reprs
from tasks.redis_transport import TRANSPORT, publishing_into


def enqueue(app: Celery, run_id: str, agent: str, attempt: int = 1, producer: Any = None,
            queue: str | None = None, input_json: str | None = None,
            into: Any = None) -> None:
    """Hand one execution of a run to `app`'s broker; the Celery task id is the run id.

    A process that does not load the agent (a reaper in a worker with other RUNCAST_AGENTS)
    sends the task by name to `queue`, the one recorded with the run. Flower shows the run id
    and a preview of `input_json` (the run's input) as the task's arguments (tasks.monitor).
    `into`: a pipeline of the broker's Redis that the message and its task-sent event join
    instead of being sent here (only where `can_enqueue_into(app)`).
    """
    spec = registry.get_agent(agent)
    shown = task_reprs(run_id, attempt, input_json)
    try:
        if producer is not None:
            _send(app, spec, agent, run_id, attempt, queue, producer, shown)
            return
        with (publishing_into(into) if into is not None else nullcontext(),
              app.producer_or_acquire() as own, one_round_trip(own)):
            _send(app, spec, agent, run_id, attempt, queue, own, shown)
    except Exception as exc:
        raise BrokerUnavailable(f"the broker did not take the run: {exc}") from exc


def can_enqueue_into(app: Celery, store_url: str) -> bool:
    """Whether a pipeline of the run store at `store_url` can carry `app`'s messages: its broker
    is that same Redis (same URL, so same database), on runcast's transport (which batches into
    a caller's pipeline), with no key prefix of kombu's to add."""
    conf = app.conf
    return (conf.broker_url == store_url and conf.broker_transport == TRANSPORT
            and not (conf.broker_transport_options or {}).get("global_keyprefix")
            and hasattr(Producer, "batch"))  # kombu 5.7+: else a publish goes out at once


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
