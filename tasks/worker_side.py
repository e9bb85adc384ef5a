"""What a process that executes runs keeps: cancel delivery, heartbeats, hard stops."""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING

from streaming.constants import (
    HEARTBEAT_INTERVAL_S,
    HEARTBEAT_STALE_S,
)
from streaming.context import StreamContext

if TYPE_CHECKING:
    from tasks.runtime import Runtime

log = logging.getLogger(__name__)


class Watch:
    """A running run's ear for cancellation, bound to its context once it has one."""

    def __init__(self) -> None:
        self.ctx: StreamContext | None = None
        self.reason: str | None = None
        self.requested = False
        self._lock = threading.Lock()

    def bind(self, ctx: StreamContext) -> None:
        with self._lock:
            self.ctx = ctx
            requested = self.requested
        if requested:
            ctx.request_cancel(self.reason)

    def deliver(self, reason: str | None) -> None:
        with self._lock:
            self.requested, self.reason = True, reason
            ctx = self.ctx
        if ctx is not None:
            ctx.request_cancel(reason)


class Cancels:
    """Routes cancel requests to the runs this process executes."""

    def __init__(self) -> None:
        self._watches: dict[str, Watch] = {}
        self._lock = threading.Lock()

    def watch(self, run_id: str) -> Watch:
        with self._lock:
            watch = self._watches[run_id] = Watch()
        return watch

    def unwatch(self, run_id: str) -> None:
        with self._lock:
            self._watches.pop(run_id, None)

    def deliver(self, run_id: str, reason: str | None) -> None:
        with self._lock:
            watch = self._watches.get(run_id)
        if watch is not None:
            watch.deliver(reason)


class Loop(threading.Thread):
    """A daemon thread calling `tick()` every `interval` seconds until stopped."""

    def __init__(self, name: str, interval: float) -> None:
        super().__init__(name=name, daemon=True)
        self.interval = interval
        self.stopping = threading.Event()

    def run(self) -> None:
        while True:
            try:
                self.tick()
            except Exception:
                log.warning("%s failed; retrying", self.name, exc_info=True)
            if self.stopping.wait(self.interval):
                return

    def tick(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        self.stopping.set()


class Heartbeats(Loop):
    """Keeps the heartbeat of every run this process executes fresh."""

    def __init__(self, rt: Runtime) -> None:
        super().__init__("runcast-heartbeats", HEARTBEAT_INTERVAL_S)
        self.rt = rt
        self._runs: set[str] = set()
        self._lock = threading.Lock()

    def add(self, run_id: str) -> None:
        with self._lock:
            self._runs.add(run_id)

    def remove(self, run_id: str) -> None:
        with self._lock:
            self._runs.discard(run_id)

    def tick(self) -> None:
        with self._lock:
            runs = list(self._runs)
        self.rt.store.heartbeat(runs, time.time() + HEARTBEAT_STALE_S)


class WorkerSide:
    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.cancels = Cancels()
        self.heartbeats = Heartbeats(rt)
        self.heartbeats.start()
        self.subscriber = rt.store.listen_cancels(self.cancels.deliver)

    def hard_stop(self, run_id: str, done: threading.Event) -> None:
        """The handler ignored its cancel past the grace period; the run has already ended.

        In a prefork child, ask the worker to kill this process (Celery's revoke with
        terminate): the pool starts a fresh one. Elsewhere the thread is left to finish alone.
        """
        from billiard.process import current_process

        if current_process().name.startswith("ForkPoolWorker"):
            log.warning("run %s ignored its cancellation; stopping its process", run_id)
            self.rt.app.control.revoke(run_id, terminate=True, signal="SIGKILL")
            done.wait(30)
        else:
            log.warning("run %s ignored its cancellation; its thread is left to end", run_id)

    def stop(self) -> None:
        self.heartbeats.stop()
        if self.subscriber is not None:
            self.subscriber.stop()
