"""GET /metrics (DESIGN.md, "Metrics"): Prometheus text, fleet-wide, behind the API key.

Its own redis-server, worker and two API processes, so every figure is known exactly: after runs
of known agents and outcomes, the counters moved by exactly that many, the histograms counted
them, the in-progress gauges are back to zero, and both API replicas report the same figures.
"""

from __future__ import annotations

import secrets
import threading
import time

import httpx
import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

from tests.api_helpers import get_run, submit, wait_terminal, wait_until
from tests.redis_server import RedisServer
from tests.runs_support import eventually
from tests.services import embedded_service, http_client, start_api, start_worker

KEY = "metrics-key-" + secrets.token_hex(8)
AUTH = {"Authorization": f"Bearer {KEY}"}
API_ENV = {"RUNCAST_API_KEYS": KEY, "RUNCAST_SECRET": secrets.token_hex(32)}


def scrape(http: httpx.Client) -> dict[tuple[str, tuple], float]:
    """Every sample as {(name, sorted labels): value}; also checks the families' types."""
    response = http.get("/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    samples: dict[tuple[str, tuple], float] = {}
    for family in text_string_to_metric_families(response.text):
        assert TYPES.get(family.name, family.type) == family.type, family
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


TYPES = {
    "runcast_runs_submitted": "counter", "runcast_runs_finished": "counter",
    "runcast_run_duration_seconds": "histogram", "runcast_run_queue_seconds": "histogram",
    "runcast_runs_in_progress": "gauge", "runcast_events": "counter",
    "runcast_webhook_deliveries": "counter", "runcast_workers": "gauge",
    "runcast_sse_subscribers": "gauge",
}


def value(samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def histogram(samples, name: str, agent: str) -> tuple[list[tuple[float, float]], float, float]:
    """(cumulative buckets sorted by le, count, sum) of one agent."""
    buckets = sorted(
        (float(dict(labels)["le"]), v) for (n, labels), v in samples.items()
        if n == name + "_bucket" and dict(labels).get("agent") == agent
    )
    return (buckets, value(samples, name + "_count", agent=agent),
            value(samples, name + "_sum", agent=agent))


@pytest.fixture(scope="module")
def fleet():
    """A private redis-server, one worker and two API replicas (keys set on both)."""
    server = RedisServer().start()
    worker = api_a = api_b = None
    try:
        worker = start_worker(server.url, name="metrics", concurrency=2)
        api_a, url_a = start_api(server.url, **API_ENV)
        api_b, url_b = start_api(server.url, **API_ENV)
        with http_client(url_a, headers=AUTH) as a, \
                http_client(url_b, headers=AUTH) as b:
            eventually(lambda: a.get("/healthz").json()["workers"] == 1, 30,
                       what="the worker in /healthz")
            yield a, b
    finally:
        for process in (api_b, api_a, worker):
            if process is not None:
                process.stop()
        server.cleanup()


def test_metrics_needs_the_key(fleet):
    a, _b = fleet
    anonymous = httpx.get(str(a.base_url) + "/metrics", timeout=30)
    assert anonymous.status_code == 401
    assert "detail" in anonymous.json()
    wrong = httpx.get(str(a.base_url) + "/metrics", headers={"Authorization": "Bearer nope"},
                      timeout=30)
    assert wrong.status_code == 401
    assert a.get("/metrics").status_code == 200


def test_runs_move_the_counters_by_exactly_their_number(fleet):
    a, b = fleet
    before = scrape(a)

    sleeper = submit(a, "sleep", {"seconds": 60})
    wait_until(a, sleeper["run_id"], lambda r: r["status"] == "running")
    during = scrape(b)  # the other replica sees the worker's running run
    assert value(during, "runcast_runs_in_progress", status="running") == 1
    time.sleep(0.3)  # the sleeper's duration is at least this
    runs = [submit(a, "echo", {"i": i}) for i in range(3)]
    runs += [submit(b, "fail", {"message": f"no {i}"}) for i in range(2)]
    done = [wait_terminal(a, run["run_id"]) for run in runs]
    assert a.post(f"/runs/{sleeper['run_id']}/cancel", json={}).status_code == 202
    done.append(wait_terminal(a, sleeper["run_id"]))
    assert [r["status"] for r in done] == ["succeeded"] * 3 + ["failed"] * 2 + ["cancelled"]

    after = eventually(lambda: (s := scrape(a)) and value(
        s, "runcast_runs_in_progress", status="running") == 0 and s, 10,
        what="the running gauge back to zero")
    expected = {("echo", "succeeded"): 3, ("fail", "failed"): 2, ("sleep", "cancelled"): 1}
    for (agent, status), n in expected.items():
        moved = (value(after, "runcast_runs_submitted_total", agent=agent)
                 - value(before, "runcast_runs_submitted_total", agent=agent))
        assert moved == n, (agent, moved)
        for other in ("succeeded", "failed", "cancelled"):
            moved = (value(after, "runcast_runs_finished_total", agent=agent, status=other)
                     - value(before, "runcast_runs_finished_total", agent=agent, status=other))
            assert moved == (n if other == status else 0), (agent, other, moved)
        for name in ("runcast_run_duration_seconds", "runcast_run_queue_seconds"):
            buckets, count, total = histogram(after, name, agent)
            _, count_before, total_before = histogram(before, name, agent)
            assert count - count_before == n, (name, agent)
            assert buckets[-1] == (float("inf"), count)
            assert [v for _, v in buckets] == sorted(v for _, v in buckets)  # cumulative
            assert total >= total_before
        # events: each run's log, counted once it ended
        logged = sum(r["last_seq"] for r in done if r["agent"] == agent)
        moved = (value(after, "runcast_events_total", agent=agent)
                 - value(before, "runcast_events_total", agent=agent))
        assert moved == logged, (agent, moved, logged)
    _, _, slept = histogram(after, "runcast_run_duration_seconds", "sleep")
    assert slept >= 0.3
    assert value(after, "runcast_runs_in_progress", status="queued") == 0
    assert value(after, "runcast_workers") == 1
    assert a.get("/healthz").json()["workers"] == 1
    for outcome in ("delivered", "retried", "failed"):
        assert ("runcast_webhook_deliveries_total", (("outcome", outcome),)) in after


def test_both_replicas_report_the_same_figures(fleet):
    a, b = fleet
    wait_terminal(a, submit(b, "countdown", {"steps": 2, "delay": 0.01})["run_id"])
    one, two = scrape(a), scrape(b)
    for samples in (one, two):
        samples.pop(("runcast_sse_subscribers", ()))  # per process
    assert one == two
    assert value(one, "runcast_runs_submitted_total", agent="countdown") >= 1


def test_sse_subscribers_count_this_process_streams(fleet):
    a, b = fleet
    run = submit(a, "sleep", {"seconds": 60})
    opened = threading.Event()
    stop = threading.Event()

    def listen() -> None:
        with httpx.stream("GET", f"{a.base_url}/runs/{run['run_id']}/stream", headers=AUTH,
                          timeout=60) as response:
            for _ in response.iter_lines():
                opened.set()
                if stop.is_set():
                    return

    reader = threading.Thread(target=listen, daemon=True)
    reader.start()
    try:
        assert opened.wait(30)
        assert value(scrape(a), "runcast_sse_subscribers") == 1
        assert value(scrape(b), "runcast_sse_subscribers") == 0
    finally:
        stop.set()
        a.post(f"/runs/{run['run_id']}/cancel", json={})
        reader.join(30)
    wait_terminal(a, run["run_id"])
    eventually(lambda: value(scrape(a), "runcast_sse_subscribers") == 0, 10,
               what="the SSE gauge back to zero")
    assert get_run(a, run["run_id"])["status"] == "cancelled"




def test_embedded_mode_serves_metrics():
    with embedded_service("embedded-metrics") as url, \
            http_client(url) as http:
        done = [wait_terminal(http, submit(http, agent, payload)["run_id"])
                for agent, payload in (("echo", {}), ("echo", {}), ("fail", {}))]
        samples = scrape(http)
    assert value(samples, "runcast_runs_submitted_total", agent="echo") == 2
    assert value(samples, "runcast_runs_finished_total", agent="echo", status="succeeded") == 2
    assert value(samples, "runcast_runs_finished_total", agent="fail", status="failed") == 1
    assert histogram(samples, "runcast_run_duration_seconds", "echo")[1] == 2
    assert histogram(samples, "runcast_run_queue_seconds", "fail")[1] == 1
    assert value(samples, "runcast_events_total", agent="echo") == sum(
        r["last_seq"] for r in done[:2])
    assert value(samples, "runcast_runs_in_progress", status="running") == 0
    assert value(samples, "runcast_runs_in_progress", status="queued") == 0
    assert value(samples, "runcast_workers") == 1


def test_webhook_deliveries_are_counted_by_outcome(runcast, api_url):
    """tasks.metrics.record_webhook_delivery is what webhook delivery calls per attempt."""
    from tasks import runtime
    from tasks.metrics import record_webhook_delivery

    with http_client(api_url, timeout=30) as http:
        before = scrape(http)
        for outcome in ("delivered", "delivered", "retried"):
            record_webhook_delivery(runtime(), outcome)
        with pytest.raises(ValueError):
            record_webhook_delivery(runtime(), "lost")
        after = scrape(http)
    moved = {outcome: value(after, "runcast_webhook_deliveries_total", outcome=outcome)
             - value(before, "runcast_webhook_deliveries_total", outcome=outcome)
             for outcome in ("delivered", "retried", "failed")}
    assert moved == {"delivered": 2, "retried": 1, "failed": 0}


def test_a_broken_metric_never_stops_a_status_change(redis_url, redis_client):
    """Metrics are written with redis.pcall inside the status scripts: a counter that cannot move
    (here one at its maximum) is skipped, the run still starts and ends."""
    from streaming.constants import METRICS_FINISHED_KEY, METRICS_RUN_DURATION_KEY
    from streaming.events import envelope_parts
    from tasks.redis_store import RedisRunStore
    from tasks.store import new_record

    agent = "overflow-" + secrets.token_hex(4)
    redis_client.hset(METRICS_RUN_DURATION_KEY, f"sum_us:{agent}", 2**63 - 1)
    store = RedisRunStore(redis.Redis.from_url(redis_url), ttl_s=60, max_events=100)
    run_id = secrets.token_hex(16)
    store.create([new_record(run_id, agent, "{}", events="all", timeout=60, metadata={},
                             batch_id=None, idempotency_key=None, request_hash="h",
                             created_at="2026-01-01T00:00:00Z")])
    assert store.claim(run_id, 1, {}, envelope_parts(run_id, "started", {}), time.time() + 10).ok
    done = store.finish(run_id, "succeeded", envelope_parts(run_id, "complete", {}), {}, attempt=1)
    assert done.ok and store.get(run_id)["status"] == "succeeded"
    assert int(redis_client.hget(METRICS_FINISHED_KEY, f"succeeded:{agent}")) == 1
    assert int(redis_client.hget(METRICS_RUN_DURATION_KEY, f"sum_us:{agent}")) == 2**63 - 1
    store.close()


def test_openmetrics_when_the_scraper_asks_for_it(fleet):
    from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_om

    a, _b = fleet
    response = a.get("/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/openmetrics-text")
    names = {family.name for family in parse_om(response.text)}
    assert {"runcast_runs_submitted", "runcast_run_duration_seconds", "runcast_workers"} <= names


def test_a_batch_counts_as_submitted_and_queued_before_its_dispatch():
    """A batch's runs are stored at once and sent to the broker later by a worker
    (tasks/dispatch.py): they count as submitted and as queued from the moment the batch is
    accepted, and a cancelled batch brings the queued gauge back to zero. No worker runs here, so
    the batch stays undispatched for the whole test."""
    server = RedisServer().start()
    api = None
    try:
        api, url = start_api(server.url, **API_ENV)
        with http_client(url, headers=AUTH) as http:
            before = scrape(http)
            body = {"runs": [{"agent": "echo", "input": {"i": i}} for i in range(5)]}
            created = http.post("/batches", json=body)
            assert created.status_code == 202, created.text
            during = scrape(http)
            assert (value(during, "runcast_runs_submitted_total", agent="echo")
                    - value(before, "runcast_runs_submitted_total", agent="echo")) == 5
            assert value(during, "runcast_runs_in_progress", status="queued") == 5
            cancelled = http.post(f"/batches/{created.json()['batch_id']}/cancel")
            assert cancelled.status_code == 202, cancelled.text
            after = scrape(http)
            assert value(after, "runcast_runs_in_progress", status="queued") == 0
            assert value(after, "runcast_runs_finished_total", agent="echo",
                         status="cancelled") == 5
    finally:
        if api is not None:
            api.stop()
        server.cleanup()
