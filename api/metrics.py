"""GET /metrics: the fleet's run metrics in the Prometheus text format (prometheus-client).

A custom collector builds every family at scrape time from the run store's snapshot (Redis:
any API replica reports every worker's work), the live workers as /healthz counts them, and
this process's SSE subscribers.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from api import sse
from tasks.celeryapp import runtime
from tasks.constants import WORKER_ALIVE_S
from tasks.metrics import WEBHOOK_OUTCOMES, Histogram
from tasks.runtime import Runtime

IN_PROGRESS_STATUSES = ("queued", "running")


def live_workers(rt: Runtime) -> int:
    """Workers that reported within three reaper intervals (the figure /healthz shows)."""
    return rt.workers(time.time() - WORKER_ALIVE_S)


def _histogram(name: str, doc: str, by_agent: dict[str, Histogram]) -> HistogramMetricFamily:
    family = HistogramMetricFamily(name, doc, labels=["agent"])
    for agent, hist in sorted(by_agent.items()):
        buckets = [(floatToGoString(le), n) for le, n in hist.cumulative()]
        family.add_metric([agent], buckets, hist.total)
    return family


class RunsCollector(Collector):
    """Reads the store's metrics once per scrape and yields the contract's families."""

    def collect(self) -> Iterator[Metric]:
        rt = runtime()
        snap = rt.store.metrics()

        submitted = CounterMetricFamily("runcast_runs_submitted_total",
                                        "Runs submitted, by agent.", labels=["agent"])
        for agent, n in sorted(snap.submitted.items()):
            submitted.add_metric([agent], n)
        yield submitted

        finished = CounterMetricFamily("runcast_runs_finished_total",
                                       "Runs that ended, by agent and status.",
                                       labels=["agent", "status"])
        for (agent, status), n in sorted(snap.finished.items()):
            finished.add_metric([agent, status], n)
        yield finished

        yield _histogram("runcast_run_duration_seconds",
                         "Seconds from a run's start to its end, by agent.", snap.run_duration)
        yield _histogram("runcast_run_queue_seconds",
                         "Seconds from a run's submission to its first start, by agent.",
                         snap.run_queue)

        in_progress = GaugeMetricFamily("runcast_runs_in_progress",
                                        "Runs queued or running now.", labels=["status"])
        for status in IN_PROGRESS_STATUSES:
            in_progress.add_metric([status], snap.in_progress.get(status, 0))
        yield in_progress

        events = CounterMetricFamily("runcast_events_total",
                                     "Events in the logs of ended runs, by agent.",
                                     labels=["agent"])
        for agent, n in sorted(snap.events.items()):
            events.add_metric([agent], n)
        yield events

        webhooks = CounterMetricFamily("runcast_webhook_deliveries_total",
                                       "Webhook delivery attempts, by outcome.",
                                       labels=["outcome"])
        for outcome in sorted({*WEBHOOK_OUTCOMES, *snap.webhook_deliveries}):
            webhooks.add_metric([outcome], snap.webhook_deliveries.get(outcome, 0))
        yield webhooks

        yield GaugeMetricFamily("runcast_workers", "Live Celery workers.", value=live_workers(rt))
        yield GaugeMetricFamily("runcast_sse_subscribers",
                                "SSE streams open on this API process.",
                                value=sse.subscribers())


def render(accept: str | None = None) -> tuple[bytes, str]:
    """One scrape: (body, content type), the Prometheus text format unless the scraper asks
    for OpenMetrics in `accept`."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(RunsCollector())
    encode, content_type = choose_encoder(accept or "")
    return encode(registry), content_type
