"""Embedded mode (REDIS_URL=memory://): the run store and event log live in this process."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import Any

from streaming.backends.memory import MemoryEventBackend
from streaming.events import Event
from tasks.batch_store import MemoryBatches
from tasks.errors import RunNotFound
from tasks.metrics import MemoryMetrics, MetricsSnapshot
from tasks.settings import Settings
from tasks.store import CLAIM_FIELDS, TERMINAL, Outcome, RunStore, decode_record, public
from tasks.webhook_store import MemoryWebhookQueue


class MemoryRunStore(MemoryBatches, RunStore):
    """Same semantics as RedisRunStore, one lock instead of Lua scripts."""

    def __init__(self, events: MemoryEventBackend, *, ttl_s: int) -> None:
        self.events = events
        self.ttl_s = ttl_s
        self._runs: dict[str, dict[str, Any]] = {}
        self._index: dict[str, float] = {}
        self._batches: dict[str, dict[str, Any]] = {}
        self._batch_runs: dict[str, list[str]] = {}
        self._idempotency: dict[str, tuple[str, str, float]] = {}
        self._running: dict[str, float] = {}
        self._changed = threading.Condition(threading.RLock())
        self.on_cancel: Callable[[str, str | None], None] | None = None
        self.metrics_counters = MemoryMetrics()
        self.webhooks = MemoryWebhookQueue(self)  # due webhook deliveries (tasks.webhook_store)

    def _add_event(self, run_id: str, parts: tuple[str, str]) -> int:
        seq = self.events.last_seq(run_id) + 1
        self.events.append(Event.from_json(f"{parts[0]}{seq}{parts[1]}"))
        return seq

    def create(self, records, batch=None) -> None:
        with self._changed:
            for record in records:
                run = decode_record(record)
                self._runs[run["run_id"]] = run
                self._index[run["run_id"]] = run["created_ts"]
                self.metrics_counters.submitted(run["agent"])
            if batch is not None:
                self._batches[batch["batch_id"]] = dict(batch)
                self._batch_runs[batch["batch_id"]] = [json.loads(r["run_id"]) for r in records]

    def claim_idempotency(self, key, run_id, request_hash):
        with self._changed:
            held = self._idempotency.get(key)
            if held is not None and held[2] > time.monotonic():
                return held[0], held[1]
            self._idempotency[key] = (run_id, request_hash, time.monotonic() + self.ttl_s)
            return None

    def release_idempotency(self, key) -> None:
        with self._changed:
            self._idempotency.pop(key, None)

    def delete(self, run_ids) -> None:
        with self._changed:
            for run_id in run_ids:
                self._runs.pop(run_id, None)
                self._index.pop(run_id, None)

    def _public_copy(self, run_id: str) -> dict[str, Any] | None:
        run = self._runs.get(run_id)
        if run is None:
            return None
        if run.get("expires_at") and run["expires_at"] <= time.monotonic():
            self._runs.pop(run_id, None)
            self._index.pop(run_id, None)
            return None
        out = dict(run, last_seq=self.events.last_seq(run_id))
        progress = [e for e in self.events.read(run_id) if e.type == "progress"]
        out["progress"] = progress[-1].data if progress else None
        return out

    def get(self, run_id):
        with self._changed:
            return self._public_copy(run_id)

    def get_many(self, run_ids):
        with self._changed:
            return [self._public_copy(r) for r in run_ids]

    def statuses(self, run_ids):
        with self._changed:
            return [(self._runs.get(r) or {}).get("status") for r in run_ids]

    def list_ids(self, before, count):
        with self._changed:
            rows = sorted(((s, r) for r, s in self._index.items()), reverse=True)
        if before is not None:
            rows = [(s, r) for s, r in rows if (s, r) < before]
        return [(r, s) for s, r in rows[:count]]

    def batch(self, batch_id):
        with self._changed:
            batch = self._batches.get(batch_id)
            return dict(batch) if batch else None

    def batch_run_ids(self, batch_id):
        with self._changed:
            return list(self._batch_runs.get(batch_id, ()))

    def claim(self, run_id, attempt, fields, started, heartbeat_deadline):
        with self._changed:
            run = self._runs.get(run_id)
            if run is None:
                return Outcome("missing")
            if run["status"] != "queued":
                return Outcome("status", run["status"])
            if run["attempt"] + 1 != attempt:
                return Outcome("fenced", run["status"])
            seq = self._add_event(run_id, started)
            timeout = run.get("timeout")
            run.update(fields, status="running", attempt=attempt,
                       deadline=None if timeout is None else time.time() + timeout)
            self._running[run_id] = heartbeat_deadline
            now = time.time()
            self.metrics_counters.started(run["agent"], now - run["created_ts"],
                                          first="started_ts" not in run)
            run["started_ts"] = now
            self._batch_log(run, "queued", "running")
            self._changed.notify_all()
            claimed = {name: run[name] for name in CLAIM_FIELDS if name in run}
            return Outcome("ok", "running", seq, dict(claimed, last_seq=seq))

    def finish(self, run_id, status, terminal, fields, *, expect="running", attempt=None,
               cancel_wins=False):
        with self._changed:
            run = self._runs.get(run_id)
            if run is None:
                return Outcome("missing")
            if run["status"] in TERMINAL:
                return Outcome("terminal", run["status"])
            if expect != "active" and run["status"] != expect:
                return Outcome("status", run["status"])
            if attempt is not None and run["attempt"] != attempt:
                return Outcome("fenced", run["status"])
            if cancel_wins and run.get("cancel_requested"):
                return Outcome("cancel_requested", run["status"],
                               run={"cancel_reason": run.get("cancel_reason")})
            seq = self._add_event(run_id, terminal)
            old = run["status"]
            self._end(run_id, run, status, fields, seq)
            self._batch_log(run, old, status)
            return Outcome("ok", status, seq)

    def _end(self, run_id: str, run: dict[str, Any], status: str, fields: dict,
             seq: int) -> None:
        started = run.get("started_ts")
        self.metrics_counters.ended(run["agent"], status, seq,
                                    None if started is None else time.time() - started)
        run.update(fields, status=status, expires_at=time.monotonic() + self.ttl_s)
        self._running.pop(run_id, None)
        self.events.expire(run_id, self.ttl_s)
        self.webhooks.run_ended(run_id, run)
        self._changed.notify_all()

    def cancel(self, run_id, reason, cancelled, finished_at):
        with self._changed:
            run = self._runs.get(run_id)
            if run is None:
                return Outcome("missing")
            if run["status"] in TERMINAL:
                return Outcome("terminal", run["status"])
            run.update(cancel_requested=True, cancel_reason=reason)
            if run["status"] == "queued":
                seq = self._add_event(run_id, cancelled)
                self._end(run_id, run, "cancelled", {"finished_at": finished_at}, seq)
                self._batch_log(run, "queued", "cancelled")
                return Outcome("cancelled", "queued")
        if self.on_cancel is not None:
            self.on_cancel(run_id, reason)
        return Outcome("requested", "running")

    def heartbeat(self, run_ids, deadline) -> None:
        with self._changed:
            for run_id in run_ids:
                if run_id in self._running:
                    self._running[run_id] = deadline

    def stale(self, now):
        with self._changed:
            return [r for r, d in self._running.items() if d <= now]

    def reap(self, run_id, now, max_attempts):
        return Outcome("alive")  # one process: its worker cannot be lost without it

    def metrics(self) -> MetricsSnapshot:
        with self._changed:
            running = len(self._running)
            queued = sum(1 for run in self._runs.values() if run["status"] == "queued")
        return self.metrics_counters.read({"queued": queued, "running": running})

    def wait(self, run_id: str, timeout: float | None) -> dict[str, Any]:
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._changed:
            while True:
                run = self._public_copy(run_id)
                if run is None:
                    raise RunNotFound(f"no run {run_id!r}")
                remaining = None if deadline is None else deadline - time.monotonic()
                if run["status"] in TERMINAL or (remaining is not None and remaining <= 0):
                    return public(run)
                self._changed.wait(remaining)

    def listen_cancels(self, deliver):
        self.on_cancel = deliver  # told by cancel() itself: runs execute in this process

    def worker_seen(self, hostname, now, *, forget_before) -> None:
        pass  # the embedded worker lives and dies with this process

    def workers(self, since):
        return None

    def reaper_turn(self, hostname, ttl_ms) -> bool:
        return True

    def note_queued(self, run_ids, now) -> None:
        pass  # the memory transport loses no message

    def health(self) -> str:
        return "embedded"

    def webhook_queue(self):
        return self.webhooks

    def record_webhook_delivery(self, outcome) -> None:
        self.metrics_counters.webhook_delivery(outcome)

    # embedded mode dispatches a batch within its request: nothing to watch
    def dispatch_pending(self, batch_id, stale_at) -> None:
        pass

    def dispatch_done(self, batch_id) -> None:
        pass

    def stalled_dispatches(self, now):
        return []

    def dispatch_lanes(self, batch_id):
        return []


def embedded_parts(settings: Settings) -> tuple[MemoryEventBackend, MemoryRunStore]:
    events = MemoryEventBackend()
    return events, MemoryRunStore(events, ttl_s=settings.run_ttl)
