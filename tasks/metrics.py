"""Fleet-wide run metrics: counters and histograms kept where the runs are (Redis hashes moved by
the run store's Lua scripts and submit pipeline, or the memory store in embedded mode), read in
one go at scrape time (api.metrics turns a snapshot into Prometheus families).

Redis layout (keys in streaming.constants): counter hashes map a label value to a count
(`status:agent` for finished runs); a histogram's hash holds `<le>:<agent>`, the count of
observations in that bucket alone (`le` its upper bound, or `+Inf`), and `sum_us:<agent>` (the
sum of the observations in microseconds).
"""

from __future__ import annotations

import json
import math
import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from streaming.constants import (
    BATCH_KEY,
    DISPATCHING_KEY,
    METRICS_EVENTS_KEY,
    METRICS_FINISHED_KEY,
    METRICS_RUN_DURATION_KEY,
    METRICS_RUN_QUEUE_KEY,
    METRICS_SUBMITTED_KEY,
    METRICS_WEBHOOK_DELIVERIES_KEY,
    RUN_DURATION_BUCKETS_S,
    RUN_QUEUE_BUCKETS_S,
)

WEBHOOK_OUTCOMES = ("delivered", "retried", "failed")


@dataclass
class Histogram:
    """Observations of one label set: per-bucket counts (not cumulative) by upper bound."""

    bounds: tuple[float, ...]
    counts: dict[float, int] = field(default_factory=dict)  # upper bound (or inf) -> count
    total: float = 0.0

    def observe(self, value: float) -> None:
        value = max(value, 0.0)
        le = next((b for b in self.bounds if value <= b), math.inf)
        self.counts[le] = self.counts.get(le, 0) + 1
        self.total += value

    def cumulative(self) -> list[tuple[float, int]]:
        """Prometheus buckets: (le, observations <= le), ending with inf (the count). Counts
        kept under bounds that are no longer configured still land in the right buckets."""
        return [(bound, sum(n for le, n in self.counts.items() if le <= bound))
                for bound in (*self.bounds, math.inf)]

    @property
    def count(self) -> int:
        return sum(self.counts.values())


@dataclass
class MetricsSnapshot:
    submitted: dict[str, int] = field(default_factory=dict)  # agent -> runs
    finished: dict[tuple[str, str], int] = field(default_factory=dict)  # (agent, status) -> runs
    events: dict[str, int] = field(default_factory=dict)  # agent -> events
    run_duration: dict[str, Histogram] = field(default_factory=dict)  # agent -> histogram
    run_queue: dict[str, Histogram] = field(default_factory=dict)
    in_progress: dict[str, int] = field(default_factory=lambda: {"queued": 0, "running": 0})
    webhook_deliveries: dict[str, int] = field(default_factory=dict)  # outcome -> deliveries


def _s(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _counts(raw: dict) -> dict[str, int]:
    return {_s(k): int(v) for k, v in raw.items()}


def _histograms(raw: dict, bounds: tuple[float, ...]) -> dict[str, Histogram]:
    out: dict[str, Histogram] = {}
    for key, value in raw.items():
        kind, _, agent = _s(key).partition(":")
        hist = out.setdefault(agent, Histogram(bounds))
        if kind == "sum_us":
            hist.total = int(value) / 1_000_000
        else:
            le = float(kind)  # '+Inf' too
            hist.counts[le] = hist.counts.get(le, 0) + int(value)
    return out


def count_submitted(pipe: Any, records: list[dict[str, str]]) -> None:
    """runcast_runs_submitted_total: add the records' runs, by agent, to a pipeline being sent."""
    for agent, count in Counter(json.loads(r["agent"]) for r in records).items():
        pipe.hincrby(METRICS_SUBMITTED_KEY, agent, count)


def read_redis_metrics(client: Any, queued_key: str, running_key: str) -> MetricsSnapshot:
    """Every metric of the fleet from Redis, in one pipeline."""
    pipe = client.pipeline(transaction=False)
    for key in (METRICS_SUBMITTED_KEY, METRICS_FINISHED_KEY, METRICS_EVENTS_KEY,
                METRICS_RUN_DURATION_KEY, METRICS_RUN_QUEUE_KEY, METRICS_WEBHOOK_DELIVERIES_KEY):
        pipe.hgetall(key)
    pipe.zcard(queued_key)
    pipe.zcard(running_key)
    pipe.zrange(DISPATCHING_KEY, 0, -1)
    submitted, finished, events, duration, queue, webhooks, queued, running, dispatching = (
        pipe.execute())
    queued = int(queued) + _undispatched(client, dispatching)
    by_agent_status = {}
    for key, value in _counts(finished).items():
        status, _, agent = key.partition(":")
        by_agent_status[(agent, status)] = value
    return MetricsSnapshot(
        submitted=_counts(submitted),
        finished=by_agent_status,
        events=_counts(events),
        run_duration=_histograms(duration, RUN_DURATION_BUCKETS_S),
        run_queue=_histograms(queue, RUN_QUEUE_BUCKETS_S),
        in_progress={"queued": int(queued), "running": int(running)},
        webhook_deliveries=_counts(webhooks),
    )


def _undispatched(client: Any, batch_ids: list) -> int:
    """Queued runs of batches whose broker messages the workers have not sent yet: they are in
    the queued set only once their dispatch claims them (tasks/dispatch.py)."""
    if not batch_ids:
        return 0
    pipe = client.pipeline(transaction=False)
    for batch_id in batch_ids:
        pipe.hmget(BATCH_KEY.format(batch_id=_s(batch_id)), "total", "dispatched")
    waiting = 0
    for total, dispatched in pipe.execute():
        if total is not None:
            waiting += max(0, int(total) - int(dispatched or 0))
    return waiting


class MemoryMetrics:
    """Embedded mode's counters (the memory store calls these under its lock)."""

    def __init__(self) -> None:
        self.snapshot = MetricsSnapshot()
        self._lock = threading.Lock()

    def submitted(self, agent: str) -> None:
        with self._lock:
            self.snapshot.submitted[agent] = self.snapshot.submitted.get(agent, 0) + 1

    def started(self, agent: str, waited_s: float | None, first: bool) -> None:
        with self._lock:
            if first and waited_s is not None:
                self.snapshot.run_queue.setdefault(
                    agent, Histogram(RUN_QUEUE_BUCKETS_S)).observe(waited_s)

    def ended(self, agent: str, status: str, last_seq: int, duration_s: float | None) -> None:
        with self._lock:
            snap = self.snapshot
            snap.finished[(agent, status)] = snap.finished.get((agent, status), 0) + 1
            snap.events[agent] = snap.events.get(agent, 0) + last_seq
            if duration_s is not None:
                snap.run_duration.setdefault(
                    agent, Histogram(RUN_DURATION_BUCKETS_S)).observe(duration_s)

    def webhook_delivery(self, outcome: str) -> None:
        with self._lock:
            deliveries = self.snapshot.webhook_deliveries
            deliveries[outcome] = deliveries.get(outcome, 0) + 1

    def read(self, in_progress: dict[str, int]) -> MetricsSnapshot:
        with self._lock:
            snap = self.snapshot
            return MetricsSnapshot(
                submitted=dict(snap.submitted),
                finished=dict(snap.finished),
                events=dict(snap.events),
                run_duration={a: Histogram(h.bounds, dict(h.counts), h.total)
                              for a, h in snap.run_duration.items()},
                run_queue={a: Histogram(h.bounds, dict(h.counts), h.total)
                           for a, h in snap.run_queue.items()},
                in_progress=dict(in_progress),
                webhook_deliveries=dict(snap.webhook_deliveries),
            )


def delivery_outcome(status: dict[str, Any], pause_s: float | None) -> str | None:
    """A webhook attempt's outcome from the status it left (tasks.webhook_store.record):
    retried while another attempt is due, else delivered or failed."""
    outcome = "retried" if pause_s is not None else status.get("state")
    return outcome if outcome in WEBHOOK_OUTCOMES else None


def webhook_delivery_command(pipe: Any, outcome: str) -> None:
    """Queue the count of one webhook delivery on a Redis pipeline the caller executes anyway
    (`outcome`: delivered, retried or failed)."""
    pipe.hincrby(METRICS_WEBHOOK_DELIVERIES_KEY, outcome, 1)


def record_webhook_delivery(rt: Any, outcome: str) -> None:
    """Count one webhook delivery attempt's outcome (delivered, retried or failed) in
    `runcast_webhook_deliveries_total`, fleet-wide (Redis) or in embedded mode's memory store."""
    if outcome not in WEBHOOK_OUTCOMES:
        raise ValueError(f"outcome must be one of {', '.join(WEBHOOK_OUTCOMES)}")
    rt.store.record_webhook_delivery(outcome)
