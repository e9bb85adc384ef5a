"""The working objects of one configuration, built once at the edge and handed to what needs them.

`Runtime(settings, app)` holds the settings, the Celery app, the event backend, the run store and
(in a process that executes runs) the worker side: cancel delivery and heartbeats. The reaper and
webhook delivery are started on it by the worker's edge (tasks.celeryapp's signals) or by the
embedded service. Nothing here is a module-level singleton: a process may hold two runtimes (two
configurations), each with its own app; `tasks.celeryapp` keeps the one `celery -A tasks` uses.
"""

from __future__ import annotations

import contextlib
import functools
import os
import threading
from typing import Any

import redis
from celery import Celery

from streaming.backends.base import EventBackend
from streaming.backends.redis import RedisEventBackend
from streaming.constants import RUN_KEY
from tasks import registry
from tasks.agent_tasks import serve_agents
from tasks.broker import can_enqueue_into, enqueue
from tasks.celery_config import new_app
from tasks.errors import BrokerUnavailable
from tasks.reaper import Reaper
from tasks.settings import Settings
from tasks.store import RunStore
from tasks.webhook_delivery import WebhookDelivery, delivery_for
from tasks.worker_side import WorkerSide


class Runtime:
    """What one process uses to talk to runs: built from settings once, after any fork."""

    events: EventBackend
    store: RunStore

    def __init__(self, settings: Settings, app: Celery | None = None) -> None:
        """`app`: the Celery app its runs are sent with (a new one for `settings` when None)."""
        self.settings = settings
        if app is None:  # a configuration of its own: its app runs its agents on this runtime
            app = new_app(settings)
            serve_agents(app, lambda: self)
        self.app = app
        self.pid = os.getpid()
        if settings.embedded:
            from tasks.memory_store import embedded_parts

            self.events, self.store = embedded_parts(settings)
            self.redis = None
        else:
            self.redis = redis.Redis.from_url(
                settings.redis_url, socket_connect_timeout=2, health_check_interval=30
            )
            self.events = RedisEventBackend.from_url(
                settings.redis_url,
                max_events=settings.max_events,
                ttl_s=settings.run_ttl,
                progress_key=RUN_KEY,  # the run record's `progress` follows its progress events
            )
            from tasks.redis_store import RedisRunStore

            self.store = RedisRunStore(
                self.redis, ttl_s=settings.run_ttl, max_events=settings.max_events
            )
        self._worker: WorkerSide | None = None  # made in processes that execute runs
        self._reaper: Reaper | None = None
        self._delivery: WebhookDelivery | None = None
        self._lock = threading.Lock()
        self._embedded: contextlib.ExitStack | None = None

    def create_and_enqueue(self, record: dict[str, str], run_id: str, agent: str) -> None:
        """Store a new run and send its message; a message the broker did not take leaves no run
        behind (BrokerUnavailable). Where the broker is the run store's Redis
        (tasks.broker.can_enqueue_into), both go in one MULTI: one round trip, and the run and
        its message land together or not at all."""
        if self._one_multi_per_submit:
            self.store.create([record], then=lambda pipe: enqueue(
                self.app, run_id, agent, into=pipe, input_json=record["input"]))
            return
        self.store.create([record])
        try:
            self.enqueue(run_id, agent, input_json=record["input"])
        except BrokerUnavailable:
            self.store.delete([run_id])
            raise

    @functools.cached_property
    def _one_multi_per_submit(self) -> bool:
        """Whether a submit's run and message share one MULTI: the app's broker settings, read
        once (Celery's configuration lookups are not free on every submit)."""
        return self.redis is not None and can_enqueue_into(self.app, self.settings.redis_url)

    def enqueue(self, run_id: str, agent: str, attempt: int = 1, producer: Any = None,
                queue: str | None = None, input_json: str | None = None) -> None:
        """Hand one execution of a run to this runtime's broker (tasks.broker.enqueue)."""
        enqueue(self.app, run_id, agent, attempt, producer=producer, queue=queue,
                input_json=input_json)

    def worker_side(self) -> WorkerSide:
        with self._lock:
            if self._worker is None:
                self._worker = WorkerSide(self)
            return self._worker

    def start_reaper(self, hostname: str | None = None) -> None:
        with self._lock:
            if self._reaper is None:
                self._reaper = Reaper(self, hostname)
                self._reaper.start()

    def stop_reaper(self) -> None:
        with self._lock:
            reaper, self._reaper = self._reaper, None
        if reaper is not None:
            reaper.stop()

    def start_delivery(self) -> None:
        """Webhook delivery in this process (off while no webhook secret is set)."""
        with self._lock:
            if self._delivery is None:
                self._delivery = delivery_for(self)
                if self._delivery is not None:
                    self._delivery.start()

    def stop_delivery(self) -> None:
        with self._lock:
            delivery, self._delivery = self._delivery, None
        if delivery is not None:
            delivery.stop()
            delivery.join(5)

    def start_embedded_worker(self, concurrency: int = 4) -> None:
        """Embedded mode: a Celery worker on threads inside this process (memory transport)."""
        from celery.contrib.testing.worker import start_worker

        with self._lock:
            if self._embedded is not None:
                return
            # every agent's queue: one process serves them all (a worker consumes only the
            # default queue unless told)
            queues = sorted({"default"} | {spec.queue for spec in registry.all_agents()})
            stack = contextlib.ExitStack()
            stack.enter_context(start_worker(
                self.app, concurrency=concurrency, pool="threads", perform_ping_check=False,
                loglevel="WARNING", shutdown_timeout=10, hostname=f"embedded@{os.getpid()}",
                queues=queues,
            ))
            self._embedded = stack
        self.start_delivery()
        stack.callback(self.stop_delivery)

    def stop_embedded_worker(self) -> None:
        with self._lock:
            stack, self._embedded = self._embedded, None
        if stack is not None:
            stack.close()

    def embedded_workers(self) -> int:
        return 1 if self._embedded is not None else 0

    def workers(self, since: float) -> int:
        """Live workers: those that reported since `since`, or this process's embedded one."""
        reported = self.store.workers(since)
        return self.embedded_workers() if reported is None else reported

    def close(self) -> None:
        self.stop_embedded_worker()
        self.stop_reaper()
        self.stop_delivery()
        if self._worker is not None:
            self._worker.stop()
        self.events.close()
        self.store.close()
