"""Per-process wiring: settings -> event backend, run store and Celery app (made lazily)."""

from __future__ import annotations

import contextlib
import importlib
import os
import threading

import redis

from streaming.backends.base import EventBackend
from streaming.backends.redis import RedisEventBackend
from streaming.constants import RUN_KEY
from tasks.settings import Settings
from tasks.store import RunStore


class Runtime:
    """What one process uses to talk to runs: built from settings once, after any fork."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.pid = os.getpid()
        if settings.embedded:
            from tasks.memory_store import embedded_parts

            self.events, self.store = embedded_parts(settings)
            self.store.on_cancel = lambda run_id, reason: self.worker_side().cancels.deliver(
                run_id, reason
            )
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
        self._worker = None  # tasks.worker.WorkerSide, made in processes that execute runs
        self._worker_lock = threading.Lock()
        self._embedded: contextlib.ExitStack | None = None

    events: EventBackend
    store: RunStore

    def worker_side(self):
        with self._worker_lock:
            if self._worker is None:
                from tasks.worker import WorkerSide

                self._worker = WorkerSide(self)
            return self._worker

    def start_embedded_worker(self, concurrency: int = 4) -> None:
        """Embedded mode: a Celery worker on threads inside this process (memory transport)."""
        from celery.contrib.testing.worker import start_worker

        from tasks.celeryapp import app

        with self._worker_lock:
            if self._embedded is not None:
                return
            stack = contextlib.ExitStack()
            stack.enter_context(start_worker(
                app, concurrency=concurrency, pool="threads", perform_ping_check=False,
                loglevel="WARNING", shutdown_timeout=10, hostname=f"embedded@{os.getpid()}",
            ))
            self._embedded = stack
        from tasks.webhook_delivery import start_delivery, stop_delivery

        start_delivery(self)
        stack.callback(stop_delivery)

    def stop_embedded_worker(self) -> None:
        with self._worker_lock:
            stack, self._embedded = self._embedded, None
        if stack is not None:
            stack.close()

    def embedded_workers(self) -> int:
        return 1 if self._embedded is not None else 0

    def close(self) -> None:
        self.stop_embedded_worker()
        if self._worker is not None:
            self._worker.stop()
        self.events.close()
        self.store.close()


_lock = threading.Lock()
_settings: Settings | None = None
_runtime: Runtime | None = None


def configure(settings: Settings | None = None) -> Settings:
    """Set the settings every later call uses (read from the environment when None)."""
    global _settings, _runtime
    with _lock:
        _settings = settings or Settings()
        old, _runtime = _runtime, None
    if old is not None and old.pid == os.getpid():
        old.close()
    from tasks.celeryapp import configure_app

    configure_app(_settings)
    return _settings


def settings() -> Settings:
    if _settings is None:
        configure()
    return _settings


def runtime() -> Runtime:
    """This process's Runtime; a forked child (prefork worker) gets its own."""
    global _runtime
    current = _runtime
    if current is not None and current.pid == os.getpid():
        return current
    with _lock:
        if _runtime is None or _runtime.pid != os.getpid():
            _runtime = Runtime(settings())
    load_agents()  # idempotent: modules are imported once
    return _runtime


def load_agents(modules: list[str] | None = None) -> None:
    """Import the agent modules named by RUNCAST_AGENTS (they register with @agent)."""
    for module in modules if modules is not None else settings().agent_modules:
        importlib.import_module(module)
