"""Webhooks delivered for real: a worker, the API and a private redis-server, a receiver on
127.0.0.1 that checks every signature with the `standardwebhooks` package.

The worker retries on a shortened schedule (RUNCAST_WEBHOOK_BACKOFF scales the contract's
5 s, 30 s, ... pauses) with a 3 s attempt timeout and at most 3 attempts, so a test takes
seconds. Every URL here is loopback (RUNCAST_WEBHOOK_ALLOW_PRIVATE=true).
"""

from __future__ import annotations

import itertools
import re
import signal
import time

import httpx
import pytest

from tests.api_helpers import get_run, submit, wait_terminal
from tests.redis_server import RedisServer
from tests.runs_support import eventually
from tests.services import Process, embedded_service, http_client, start_api, start_worker
from tests.webhook_support import HANG, SECRET, Receiver, unreachable_url

pytestmark = pytest.mark.slow

BACKOFF = 0.05  # pauses of 0.25 s, 1.5 s, 6 s, ...
TIMEOUT_S = 3.0
MAX_ATTEMPTS = 3
API_ENV = {"RUNCAST_WEBHOOK_SECRET": SECRET, "RUNCAST_WEBHOOK_ALLOW_PRIVATE": "true"}
WORKER_ENV = {**API_ENV, "RUNCAST_WEBHOOK_BACKOFF": str(BACKOFF),
              "RUNCAST_WEBHOOK_TIMEOUT": str(TIMEOUT_S),
              "RUNCAST_WEBHOOK_MAX_ATTEMPTS": str(MAX_ATTEMPTS)}
HANG_GUARD_S = 30  # far more than any delivery here needs


class World:
    """A private redis-server, the API and the workers on it."""

    def __init__(self, worker_env: dict[str, str] = WORKER_ENV) -> None:
        self.server = RedisServer().start()
        self.worker_env = worker_env
        self.workers: list[Process] = []
        self.api, self.url = start_api(self.server.url, **API_ENV)
        self.http = http_client(self.url, timeout=30)

    def start_worker(self, name: str) -> Process:
        process = start_worker(self.server.url, name=name, concurrency=2, **self.worker_env)
        self.workers.append(process)
        return process

    def close(self) -> None:
        self.http.close()
        for process in [*self.workers, self.api]:
            process.stop()
        self.server.cleanup()


@pytest.fixture(scope="module")
def world():
    state = World()
    state.start_worker("hooks1")
    yield state
    state.close()


def settled(http: httpx.Client, path: str) -> dict:
    """The run (or batch) once its webhook is delivered or failed."""
    def check():
        body = http.get(path).json()
        return body if (body.get("webhook_status") or {}).get("state") != "pending" else None

    return eventually(check, timeout=HANG_GUARD_S, what=f"the webhook of {path} to settle")


def assert_signed_and_same(requests) -> None:
    """Every request carries a valid signature (standardwebhooks) and one message: same id,
    same body; each attempt has its own fresh timestamp."""
    assert requests
    assert all(r.verified for r in requests), [r.error for r in requests]
    assert len({r.webhook_id for r in requests}) == 1
    assert len({r.body for r in requests}) == 1
    assert re.fullmatch(r"msg_[0-9a-f]{32}", requests[0].webhook_id)
    for r in requests:
        assert r.headers["content-type"] == "application/json"
        assert abs(int(r.headers["webhook-timestamp"]) - time.time()) < 60


def test_500_twice_then_200_is_delivered_on_the_third_attempt(world):
    with Receiver([500, 500], then=200) as hook:
        run = submit(world.http, "echo", {"say": "hi"}, webhook=hook.url)
        assert run["webhook"] == hook.url
        assert run["webhook_status"] == {"state": "pending", "attempts": 0,
                                         "last_status": None, "last_error": None}
        done = settled(world.http, f"/runs/{run['run_id']}")
        requests = hook.requests()
    assert done["webhook_status"] == {"state": "delivered", "attempts": 3, "last_status": 200,
                                      "last_error": None}
    assert len(requests) == 3
    assert_signed_and_same(requests)
    message = requests[0].message
    assert set(message) == {"type", "timestamp", "data"}
    assert message["type"] == "run.succeeded"
    assert message["timestamp"] == done["finished_at"]
    data = message["data"]
    assert "stream_token" not in data
    assert data["run_id"] == run["run_id"] and data["status"] == "succeeded"
    assert data["output"] == {"echo": {"say": "hi"}}
    assert {k: v for k, v in done.items() if k not in ("stream_token", "webhook_status")} == {
        k: v for k, v in data.items() if k != "webhook_status"}
    # growing pauses: about 0.25 s, then about 1.5 s (the contract's 5 s and 30 s, scaled)
    first, second = (b.at - a.at for a, b in itertools.pairwise(requests))
    assert 5 * BACKOFF * 0.9 <= first < 30 * BACKOFF, (first, second)
    assert 30 * BACKOFF * 0.9 <= second < 120 * BACKOFF, (first, second)


def test_410_stops_at_once(world):
    with Receiver(then=410) as hook:
        run = submit(world.http, "fail", {"message": "boom"}, webhook=hook.url)
        done = settled(world.http, f"/runs/{run['run_id']}")
        time.sleep(5 * BACKOFF * 4)  # longer than a retry would wait
        requests = hook.requests()
    assert done["status"] == "failed"
    assert done["webhook_status"]["state"] == "failed"
    assert done["webhook_status"]["attempts"] == 1
    assert done["webhook_status"]["last_status"] == 410
    assert len(requests) == 1
    assert_signed_and_same(requests)
    assert requests[0].message["type"] == "run.failed"
    assert requests[0].message["data"]["error"]["code"] == "agent_error"


def test_a_receiver_that_never_answers_fails_after_the_maximum(world):
    with Receiver(then=HANG) as hook:
        run = submit(world.http, "echo", {}, webhook=hook.url)
        started = time.monotonic()
        done = settled(world.http, f"/runs/{run['run_id']}")
        took = time.monotonic() - started
        requests = hook.requests()
    status = done["webhook_status"]
    assert status["state"] == "failed" and status["attempts"] == MAX_ATTEMPTS
    assert status["last_status"] is None
    assert "no answer within" in status["last_error"]
    assert len(requests) == MAX_ATTEMPTS
    assert_signed_and_same(requests)
    assert took >= MAX_ATTEMPTS * TIMEOUT_S  # each attempt waited for its timeout


def test_a_refused_connection_is_retried_then_failed(world):
    run = submit(world.http, "echo", {}, webhook=unreachable_url())
    status = settled(world.http, f"/runs/{run['run_id']}")["webhook_status"]
    assert status["state"] == "failed" and status["attempts"] == MAX_ATTEMPTS
    assert status["last_status"] is None
    assert "could not connect" in status["last_error"]


def test_a_slow_receiver_holds_up_neither_runs_nor_other_receivers(world):
    with Receiver(then=HANG) as slow, Receiver(then=200) as fast:
        stuck = [submit(world.http, "echo", {"i": i}, webhook=slow.url) for i in range(4)]
        eventually(lambda: len(slow.requests()) >= 4, timeout=HANG_GUARD_S,
                   what="the slow receiver to hold four requests")
        started = time.monotonic()
        run = submit(world.http, "echo", {}, webhook=fast.url)
        assert wait_terminal(world.http, run["run_id"])["status"] == "succeeded"
        done = settled(world.http, f"/runs/{run['run_id']}")
        took = time.monotonic() - started
        assert done["webhook_status"]["state"] == "delivered"
        # not behind the four attempts the slow receiver holds (each waits TIMEOUT_S)
        assert took < TIMEOUT_S
        assert fast.requests()[0].at - slow.requests()[3].at < TIMEOUT_S
        for held in stuck:
            settled(world.http, f"/runs/{held['run_id']}")


def test_batch_done_is_sent_once_when_every_run_has_ended(world):
    with Receiver(then=200) as hook:
        body = {"runs": [{"agent": "echo", "input": {"i": i}} for i in range(3)]
                + [{"agent": "fail", "input": {"message": "x"}}], "webhook": hook.url}
        response = world.http.post("/batches", json=body)
        assert response.status_code == 202, response.text
        batch = response.json()
        done = settled(world.http, f"/batches/{batch['batch_id']}")
        time.sleep(0.5)
        requests = hook.requests()
        ended = [get_run(world.http, run_id) for run_id in batch["run_ids"]]
    assert done["webhook"] == hook.url
    assert done["webhook_status"] == {"state": "delivered", "attempts": 1, "last_status": 200,
                                      "last_error": None}
    assert len(requests) == 1  # one message for the batch, none for its runs
    assert_signed_and_same(requests)
    message = requests[0].message
    assert message["type"] == "batch.done"
    data = message["data"]
    assert data["batch_id"] == batch["batch_id"] and data["total"] == 4
    assert data["counts"] == {"succeeded": 3, "failed": 1} and data["done"] is True
    assert all(run["webhook"] is None and run["webhook_status"] is None for run in ended)


def test_a_killed_worker_leaves_nothing_undelivered(world):
    """SIGKILL mid-attempt: the message comes due again and another worker sends it (same
    webhook-id). A run cancelled while queued, with no worker alive at all, gets its webhook
    from the worker started later."""
    with Receiver([HANG], then=200) as hook:
        run = submit(world.http, "echo", {"n": 1}, webhook=hook.url)
        eventually(lambda: hook.requests(), timeout=HANG_GUARD_S, interval=0.01,
                   what="the first attempt to reach the receiver")
        for process in world.workers:  # the attempt is under way (it times out in 3 s)
            process.kill(signal.SIGKILL)
        world.workers.clear()
        assert len(hook.requests()) == 1

        queued = submit(world.http, "block", {"seconds": 3600}, webhook=hook.url)
        response = world.http.post(f"/runs/{queued['run_id']}/cancel", json={"reason": "no"})
        assert response.status_code == 202 and response.json()["status"] == "cancelled"
        time.sleep(1)
        assert len(hook.requests()) == 1  # nobody delivers while no worker runs

        world.start_worker("hooks2")
        first = settled(world.http, f"/runs/{run['run_id']}")
        second = settled(world.http, f"/runs/{queued['run_id']}")
        requests = hook.requests()
    assert first["webhook_status"]["state"] == "delivered"
    assert second["webhook_status"]["state"] == "delivered"
    by_run: dict[str, list] = {}
    for received in requests:
        by_run.setdefault(received.message["data"]["run_id"], []).append(received)
    assert set(by_run) == {run["run_id"], queued["run_id"]}
    assert len(by_run[run["run_id"]]) >= 2  # the killed attempt, then the delivery
    assert_signed_and_same(by_run[run["run_id"]])
    assert_signed_and_same(by_run[queued["run_id"]])
    assert by_run[queued["run_id"]][0].message["type"] == "run.cancelled"


def test_delivery_checks_the_address_again():
    """The API accepted a loopback URL (private allowed there); the worker, whose settings do not
    allow private addresses, refuses to send to it at delivery time: nothing reaches it."""
    strict_worker = {**WORKER_ENV, "RUNCAST_WEBHOOK_ALLOW_PRIVATE": "false"}
    state = World(worker_env=strict_worker)
    try:
        state.start_worker("strict")
        with Receiver(then=200) as hook:
            run = submit(state.http, "echo", {}, webhook=hook.url)
            status = settled(state.http, f"/runs/{run['run_id']}")["webhook_status"]
            assert hook.requests() == []
        assert status["state"] == "failed" and status["attempts"] == MAX_ATTEMPTS
        assert "refused at delivery" in status["last_error"]
        assert "loopback" in status["last_error"]
    finally:
        state.close()




def test_embedded_mode_delivers_too():
    with embedded_service(**WORKER_ENV) as url, \
            Receiver([503], then=200) as hook, Receiver(then=200) as batch_hook, \
            http_client(url, timeout=30) as http:
        run = submit(http, "echo", {}, webhook=hook.url)
        queued = http.post("/batches", json={"runs": [{"agent": "echo"}] * 2,
                                             "webhook": batch_hook.url}).json()
        done = settled(http, f"/runs/{run['run_id']}")
        batch = settled(http, f"/batches/{queued['batch_id']}")
        requests, batch_requests = hook.requests(), batch_hook.requests()
    assert done["webhook_status"] == {"state": "delivered", "attempts": 2, "last_status": 200,
                                      "last_error": None}
    assert len(requests) == 2
    assert_signed_and_same(requests)
    assert requests[0].message["type"] == "run.succeeded"
    assert batch["webhook_status"]["state"] == "delivered"
    assert len(batch_requests) == 1
    assert_signed_and_same(batch_requests)
    assert batch_requests[0].message["type"] == "batch.done"
    assert batch_requests[0].message["data"]["counts"] == {"succeeded": 2}


def test_a_run_failed_by_the_reaper_gets_its_webhook():
    """worker_lost is written by another worker's reaper: that path turns the run terminal too."""
    state = World(worker_env={**WORKER_ENV, "RUNCAST_MAX_ATTEMPTS": "1"})
    try:
        lost = state.start_worker("lost")
        with Receiver(then=200) as hook:
            run = submit(state.http, "block", {"seconds": 120}, webhook=hook.url)
            eventually(lambda: get_run(state.http, run["run_id"])["status"] == "running",
                       timeout=HANG_GUARD_S, what="the run to start")
            lost.kill(signal.SIGKILL)
            state.workers.remove(lost)
            state.start_worker("reaper")
            done = eventually(
                lambda: (r := get_run(state.http, run["run_id"]))["webhook_status"]["state"]
                != "pending" and r, timeout=90, interval=0.2, what="the lost run's webhook")
            requests = hook.requests()
        assert done["status"] == "failed" and done["error"]["code"] == "worker_lost"
        assert done["webhook_status"]["state"] == "delivered"
        assert len(requests) == 1
        assert_signed_and_same(requests)
        assert requests[0].message["type"] == "run.failed"
        assert requests[0].message["data"]["error"]["code"] == "worker_lost"
    finally:
        state.close()


def test_an_idempotent_repeat_must_name_the_same_webhook(world):
    with Receiver(then=200) as first, Receiver(then=200) as second:
        body = {"agent": "echo", "input": {}, "idempotency_key": f"hook-{time.time_ns()}"}
        run = submit(world.http, **body, webhook=first.url)
        again = world.http.post("/runs", json={**body, "webhook": first.url})
        assert again.status_code == 202 and again.json()["run_id"] == run["run_id"]
        other = world.http.post("/runs", json={**body, "webhook": second.url})
        assert other.status_code == 409, other.text
        settled(world.http, f"/runs/{run['run_id']}")
        assert len(first.requests()) == 1 and second.requests() == []


def deliveries(http: httpx.Client) -> dict[str, float]:
    """runcast_webhook_deliveries_total by outcome, from /metrics."""
    from prometheus_client.parser import text_string_to_metric_families

    response = http.get("/metrics")
    assert response.status_code == 200, response.text
    return {s.labels["outcome"]: s.value for family in text_string_to_metric_families(
        response.text) for s in family.samples if s.name == "runcast_webhook_deliveries_total"}


def test_deliveries_are_counted_in_metrics(world):
    """Each attempt counts once in runcast_webhook_deliveries_total: retried, then delivered
    or failed (DESIGN.md, "Metrics")."""
    before = deliveries(world.http)
    with Receiver([500], then=200) as hook:
        settled(world.http, f"/runs/{submit(world.http, 'echo', {}, webhook=hook.url)['run_id']}")
    with Receiver(then=410) as hook:
        settled(world.http, f"/runs/{submit(world.http, 'echo', {}, webhook=hook.url)['run_id']}")
    after = deliveries(world.http)
    moved = {k: after.get(k, 0) - before.get(k, 0) for k in ("delivered", "retried", "failed")}
    assert moved == {"delivered": 1, "retried": 1, "failed": 1}


def test_the_python_client_sends_run_and_batch_webhooks(world):
    """api.client mirrors the API: `webhook=` on submit, submit_stream and submit_batch."""
    from api.client import Client

    with Receiver(then=200) as hook, Client(world.url, timeout=30) as client:
        run = client.submit("echo", {"via": "client"}, webhook=hook.url)
        assert run.webhook == hook.url
        streamed = client.submit_stream("echo", {"via": "stream"}, webhook=hook.url)
        assert [event.type for event in streamed][-1] == "complete"
        batch = client.submit_batch([{"agent": "echo", "input": {"i": 1}}], webhook=hook.url)
        settled(world.http, f"/runs/{run.run_id}")
        settled(world.http, f"/runs/{streamed.run_id}")
        settled(world.http, f"/batches/{batch.batch_id}")
        requests = hook.requests()
    types = sorted(request.message["type"] for request in requests)
    assert types == ["batch.done", "run.succeeded", "run.succeeded"]
    assert_signed_and_same([r for r in requests if r.message["type"] == "batch.done"])
    run_ids = {r.message["data"].get("run_id") for r in requests} - {None}
    assert run_ids == {run.run_id, streamed.run_id}
