"""The Celery entry point (`celery -A tasks worker` finds `app`) and this process's runtime.

This is the one module holding process-wide state: the app Celery's command line loads, the
settings read from the environment, and the Runtime built from them (once per process, again in a
forked child). Everything else in tasks/ takes a Runtime as an argument; a test or a second
service builds its own with `Runtime(settings)` beside this one.
"""

from __future__ import annotations

import importlib
import os
import threading

from celery import Celery, signals

from tasks import heap
from tasks.agent_tasks import serve_agents
from tasks.celery_config import configure_app
from tasks.runtime import Runtime
from tasks.settings import Settings

app = Celery("runcast")

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
    configure_app(app, _settings)
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
            _runtime = Runtime(settings(), app)
    load_agents()  # idempotent: modules are imported once
    return _runtime


def load_agents(modules: list[str] | None = None) -> None:
    """Import the agent modules named by RUNCAST_AGENTS (they register with @agent)."""
    for module in modules if modules is not None else settings().agent_modules:
        importlib.import_module(module)


serve_agents(app, runtime)


@signals.worker_ready.connect
def _start_worker_loops(sender=None, **_kwargs) -> None:
    if getattr(sender, "app", app) is not app:
        return  # a worker of another app (a second runtime) starts its own
    rt = runtime()
    rt.start_reaper(getattr(sender, "hostname", None))
    rt.start_delivery()
    if heap.many_runs_per_process(getattr(sender, "pool", None)):
        heap.settle()  # last: what the worker keeps for its lifetime is alive by now


@signals.worker_shutdown.connect
def _stop_worker_loops(sender=None, **_kwargs) -> None:
    if getattr(sender, "app", app) is not app:
        return  # a worker of another app (a second runtime) stops its own
    if _runtime is not None and _runtime.pid == os.getpid():
        _runtime.stop_reaper()
        _runtime.stop_delivery()
