"""FAULTS (issue 6): workers SIGKILLed, Redis connections killed, Redis stopped and restarted
(with its data, and empty), SSE streams cut and resumed a hundred times, a slow SSE consumer.

Every test starts its own redis-server, workers and API (tests/reliability/faults_support.py),
so it may kill and restart them freely without touching any other test. Each prints one line of
figures (`FAULTS ...`); run `.venv/bin/pytest tests/reliability/test_faults.py -q -s` to see them.
The numbers below are sized so the module takes about 2.5 minutes on a 2-core machine.
"""

from __future__ import annotations

import random
import socket
import threading
import time
from collections import Counter
from datetime import datetime

import httpx
import pytest

from api.client import Client
from tests.log_check import check_log
from tests.reliability.agents import MAX_KEY
from tests.reliability.faults_support import FIGURES, Cluster, Follower, report
from tests.runs_support import node

pytestmark = [pytest.mark.reliability, pytest.mark.slow]

WORDS = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india",
         "juliet", "kilo", "lima", "mike", "november", "oscar", "papa", "quebec", "romeo",
         "sierra", "tango", "uniform", "victor", "whiskey", "xray", "yankee", "zulu"]


def text(n: int) -> str:
    return " ".join(f"{WORDS[i % len(WORDS)]}{i}" for i in range(n))


@pytest.fixture(scope="module", autouse=True)
def figures():
    yield
    if FIGURES:
        print("\n\nFAULTS figures\n" + "\n".join(f"  {line}" for line in FIGURES), flush=True)


@pytest.fixture
def cluster_factory():
    made: list[Cluster] = []

    def make(**options) -> Cluster:
        cluster = Cluster(**options)
        made.append(cluster)
        return cluster

    yield make
    for cluster in made:
        cluster.close()


def utc(ts: str) -> float:
    return datetime.fromisoformat(ts).timestamp()


# -- 1. workers SIGKILLed at random moments --------------------------------------------------------
KILLS = 12
RUNS = 200
WAVES = 10
AFTER_LAST_KILL_S = 90  # every run is terminal this long after the last kill

MIX = [  # agent, input of run i, its output when it succeeds
    ("rel_echo", lambda i: {"n": i}, lambda i: {"echo": {"n": i}}),
    ("rel_countdown", lambda i: {"steps": 8, "delay": 0.05}, lambda i: {"steps": 8}),
    ("rel_tokens", lambda i: {"text": text(30), "delay": 0.015}, lambda i: {"text": text(30)}),
    ("rel_sleep", lambda i: {"seconds": 0.8}, lambda i: {"slept": 0.8}),
    ("rel_fail", lambda i: {"message": f"on purpose {i}"}, None),
    ("rel_custom", lambda i: {"document_id": f"d{i}"}, lambda i: {"answer": "done"}),
]


@pytest.mark.timeout(240)
def test_workers_sigkilled_at_random_moments(cluster_factory):
    rng = random.Random()
    c = cluster_factory(RUNCAST_MAX_ATTEMPTS="3")
    c.start_workers(2, concurrency=3)
    c.start_api()

    kinds: dict[str, int] = {}  # run id -> its i (its agent is MIX[i % len(MIX)])
    submit_errors: list[BaseException] = []

    def submit_waves() -> None:
        try:
            for wave in range(WAVES):
                batch = []
                for j in range(RUNS // WAVES):
                    i = wave * (RUNS // WAVES) + j
                    agent, payload, _ = MIX[i % len(MIX)]
                    batch.append({"agent": agent, "input": payload(i)})
                for j, run_id in enumerate(c.submit_batch(batch)):
                    kinds[run_id] = wave * (RUNS // WAVES) + j
                time.sleep(2.0)
        except BaseException as exc:  # noqa: BLE001 - reported below
            submit_errors.append(exc)

    submitter = threading.Thread(target=submit_waves, daemon=True)
    submitter.start()
    killed: list[str] = []
    for _ in range(KILLS):
        time.sleep(rng.uniform(0.8, 2.0))
        deadline = time.monotonic() + 30
        while not (ready := [w for w in c.workers if c.ready(w)]):
            assert time.monotonic() < deadline, "no replacement worker became ready"
            time.sleep(0.1)
        victim = rng.choice(ready)
        killed.append(node(victim.args[victim.args.index("-n") + 1].split("@")[0]))
        c.kill_worker(victim)
        c.spawn_worker(concurrency=rng.randint(2, 4))  # the replacement
    last_kill = time.monotonic()
    submitter.join(60)
    assert not submit_errors, submit_errors
    assert len(kinds) == RUNS

    runs = c.wait_terminal(list(kinds), timeout=AFTER_LAST_KILL_S)
    settled_s = time.monotonic() - last_kill

    outcomes: Counter[str] = Counter()
    interrupted = 0
    for run_id, run in runs.items():
        agent, _, output = MIX[kinds[run_id] % len(MIX)]
        events = c.events(run_id)
        check_log(run, events)
        code = (run["error"] or {}).get("code")
        outcomes[run["status"] if code is None else f"failed:{code}"] += 1
        if code == "worker_lost":  # lost on its last attempt: allowed
            assert run["attempt"] == 3, run
        elif agent == "rel_fail":
            assert run["status"] == "failed" and code == "agent_error", run
        else:
            assert run["status"] == "succeeded", run
            assert run["output"] == output(kinds[run_id])
        starts = [e for e in events if e["type"] == "started"]
        lost = starts if code == "worker_lost" else starts[:-1]
        if lost:
            interrupted += 1
            assert all(s["data"]["worker"] in killed for s in lost), starts  # only killed ones
        # No two executions of the run overlapped (the guard in tests/reliability/agents.py).
        top = c.admin.get(MAX_KEY.format(run_id=run_id))
        assert top == b"1", f"run {run_id} ran {top} times at once"

    logs = "".join(w.output() for w in [*c.workers, *c.dead])
    resent = logs.count("its message was lost; sending it again")
    skipped = logs.count(" skipped: ")
    report(f"worker SIGKILL: {len(killed)} kills of {RUNS} runs in flight, {interrupted} runs "
           f"interrupted and retried or failed; outcomes {dict(sorted(outcomes.items()))}; all "
           f"terminal {settled_s:.1f} s after the last kill; {resent} lost broker messages "
           f"resent, {skipped} stale deliveries skipped by the fenced claim; overlapping "
           f"executions 0; double terminal events 0")
    assert len(killed) >= 10
    assert interrupted >= 5, "the kills hardly hit a run in flight: the test proves little"
    assert settled_s < AFTER_LAST_KILL_S


# -- 2. Redis connections killed -------------------------------------------------------------------
KILL_PHASE_S = 10.0  # then the kills stop, and everyone must have recovered by themselves


def test_redis_connections_killed_during_runs_and_streams(cluster_factory):
    c = cluster_factory()
    c.start_workers(2, concurrency=3)
    c.start_api()

    kills: list[int] = []
    stop = threading.Event()

    def killer() -> None:  # for KILL_PHASE_S, while the runs are submitted and streamed
        kinds = ["CLIENT KILL TYPE normal SKIPME yes", "CLIENT KILL TYPE pubsub"]
        end = time.monotonic() + KILL_PHASE_S
        while not stop.wait(random.uniform(0.2, 0.5)) and time.monotonic() < end:
            kills.append(c.admin.execute_command(kinds[len(kills) % 2]))
        kills_ended.append(time.time())

    kills_ended: list[float] = []
    runs: list[str] = []
    followers: list[Follower] = []
    clients: list[tuple[str, list, threading.Thread]] = []

    def client_stream(run_id: str, out: list) -> None:
        with Client(c.api_url, reconnect_timeout=60) as client:
            out.extend(client.stream(run_id))

    kill_thread = threading.Thread(target=killer, daemon=True)
    kill_thread.start()
    try:
        for wave in range(3):
            batch = c.submit_batch(
                [{"agent": "rel_tokens", "input": {"text": text(150), "delay": 0.01}}] * 3
                + [{"agent": "rel_countdown", "input": {"steps": 25, "delay": 0.05}}] * 3
                + [{"agent": "rel_sleep", "input": {"seconds": 1.5}}] * 2,
                retry_503=True,
            )
            runs += batch
            followers += [Follower(c.api_url, r, seed=wave).start() for r in batch]
            out: list = []
            thread = threading.Thread(target=client_stream, args=(batch[0], out), daemon=True)
            thread.start()
            clients.append((batch[0], out, thread))
            time.sleep(1.5)
        c.join(followers, 90)
    finally:
        stop.set()
        kill_thread.join(5)

    done = c.wait_terminal(runs, timeout=60)
    settled_s = max(utc(run["finished_at"]) for run in done.values()) - kills_ended[0]
    for run_id, run in done.items():
        assert run["status"] == "succeeded", run
        assert c.admin.get(MAX_KEY.format(run_id=run_id)) == b"1"
    drops = 0
    for follower in followers:
        log = c.events(follower.run_id)
        check_log(done[follower.run_id], log)
        follower.assert_exactly(log)
        drops += follower.drops
    for run_id, out, thread in clients:
        thread.join(60)
        assert [e.seq for e in out] == [e["seq"] for e in c.events(run_id)]
    # Everyone reconnected by themselves: a new run works end to end, workers are registered.
    fresh = c.submit("tokens", {"text": text(20)})
    follower = Follower(c.api_url, fresh).start()
    follower.join(30)
    follower.assert_exactly(c.events(fresh))
    health = c.http.get(f"{c.api_url}/healthz").json()
    assert health["redis"] == "ok" and health["workers"] >= 1, health
    killed_clients = sum(kills)
    resent = "".join(w.output() for w in c.workers).count("its message was lost; sending it")
    report(f"Redis connections killed: {len(kills)} CLIENT KILLs ({killed_clients} connections) "
           f"in {KILL_PHASE_S:g} s during {len(runs)} runs and {len(followers) + len(clients)} "
           f"SSE subscribers; {drops} SSE drops resumed; {c.busy} submissions answered 503 "
           f"and sent again; {resent} lost broker messages resent; "
           f"runs succeeded {len(runs)}/{len(runs)}, "
           + ("all while the kills went on" if settled_s <= 0 else
              f"the last {settled_s:.1f} s after the kills stopped")
           + "; events lost 0, duplicated 0")
    assert len(kills) >= 10 and killed_clients > 0


# -- 3. Redis stopped for 5 s, started again with its data -----------------------------------------
OUTAGE_S = 5.0


def test_redis_stopped_and_started_with_its_data(cluster_factory):
    c = cluster_factory(persist=True)
    c.start_workers(2, concurrency=2)
    c.start_api()

    long_tokens = c.submit("tokens", {"text": text(500), "delay": 0.025})  # ~13 s
    long_count = c.submit("countdown", {"steps": 50, "delay": 0.25})  # ~13 s
    quiet = c.submit("block", {"seconds": 4})  # no event to flush: ends during the outage
    short = [c.submit("rel_echo", {"n": i}) for i in range(3)]
    followers = [Follower(c.api_url, r).start() for r in (long_tokens, long_count)]
    out: list = []

    def client_stream() -> None:
        with Client(c.api_url, reconnect_timeout=60) as client:
            out.extend(client.stream(long_tokens))

    streamer = threading.Thread(target=client_stream, daemon=True)
    streamer.start()
    deadline = time.monotonic() + 30
    while min(f.last_seq for f in followers) < 8 or c.run(quiet)["status"] != "running":
        assert time.monotonic() < deadline, "the runs did not start"
        time.sleep(0.05)
    time.sleep(1.0)  # `quiet` ends 0 to 3 s into the outage

    down_at = time.time()
    c.server.stop()
    during = c.http.get(f"{c.api_url}/runs/{long_tokens}")
    assert during.status_code == 503 and during.json()["detail"], during.text
    time.sleep(OUTAGE_S)
    up_at = time.time()
    c.server.start()

    runs = c.wait_terminal([long_tokens, long_count, quiet, *short], timeout=60)
    emitted_during = 0
    for run_id in (long_tokens, long_count):
        run, log = runs[run_id], c.events(run_id)
        check_log(run, log)
        assert run["status"] == "succeeded", run
        assert run["attempt"] == 1, "the run was executed again"
        emitted_during += sum(1 for e in log if down_at <= utc(e["ts"]) <= up_at)
    tokens_log = c.events(long_tokens)
    assert "".join(e["data"]["content"] for e in tokens_log if e["type"] == "token") == (
        text(500) + " ")
    assert [e["data"]["step"] for e in c.events(long_count) if e["type"] == "progress"] == [
        f"{i}/50" for i in range(1, 51)]
    c.join(followers, 60)
    for follower in followers:
        follower.assert_exactly(c.events(follower.run_id))
    streamer.join(60)
    assert [(e.seq, e.type) for e in out] == [(e["seq"], e["type"]) for e in tokens_log]
    for run_id in [quiet, *short]:
        assert runs[run_id]["status"] == "succeeded", runs[run_id]
        assert runs[run_id]["attempt"] == 1, f"run {run_id} was executed again"
    fresh = c.submit("echo", {"after": "outage"})
    assert c.wait_terminal([fresh], timeout=30)[fresh]["status"] == "succeeded"
    report(f"Redis stopped {OUTAGE_S:g} s with its data: {emitted_during} events emitted during "
           f"the outage, all stored and streamed; {len(runs)}/{len(runs)} runs succeeded on their "
           f"first attempt; SSE drops resumed {sum(f.drops for f in followers)}; lost 0")
    assert emitted_during >= 100


# -- 4. Redis restarted empty ----------------------------------------------------------------------
def test_redis_restarted_empty(cluster_factory):
    c = cluster_factory(persist=False)
    c.start_workers(2, concurrency=2)
    c.start_api()
    api = c.api_url
    old = c.submit("echo", {"old": True})
    assert c.wait_terminal([old], timeout=30)[old]["status"] == "succeeded"
    in_flight = c.submit("sleep", {"seconds": 3})
    deadline = time.monotonic() + 30
    while c.run(in_flight)["status"] != "running":
        assert time.monotonic() < deadline
        time.sleep(0.05)

    c.server.stop()
    requests = [
        ("GET", f"/runs/{old}", None), ("GET", f"/runs/{old}/events", None),
        ("GET", f"/runs/{old}/wait?timeout=1", None), ("GET", f"/runs/{old}/stream", None),
        ("POST", f"/runs/{old}/cancel", {}), ("GET", "/runs", None),
        ("POST", "/runs", {"agent": "echo", "input": {}}),
        ("POST", "/batches", {"runs": [{"agent": "echo", "input": {}}]}),
        ("GET", f"/batches/{old}", None), ("GET", "/healthz", None),
    ]
    answers = {}
    for method, path, body in requests:
        started = time.monotonic()
        response = httpx.request(method, api + path, json=body, timeout=30)
        answers[f"{method} {path.replace(old, '{id}')}"] = response.status_code
        assert response.status_code == 503, (method, path, response.status_code, response.text)
        assert response.json()["detail"], response.text
        assert time.monotonic() - started < 10, (method, path, "answered too slowly")
    assert httpx.get(api + "/agents").status_code == 200  # needs no Redis

    c.server.start()  # empty: no run, no queue binding, no script
    restarted = time.monotonic()
    assert httpx.get(f"{api}/runs/{old}").status_code == 404
    assert httpx.get(f"{api}/runs/{old}/stream").status_code == 404
    assert httpx.get(f"{api}/runs/{in_flight}").status_code == 404
    fresh: list[str] = []
    deadline = time.monotonic() + 30
    while len(fresh) < 6:
        response = c.http.post(f"{api}/runs", json={"agent": "tokens",
                                                    "input": {"text": text(40), "delay": 0.01}})
        if response.status_code == 202:
            fresh.append(response.json()["run_id"])
            continue
        assert response.status_code == 503, response.text
        assert time.monotonic() < deadline, f"no new run accepted: {response.text}"
        time.sleep(0.2)
    followers = [Follower(api, r).start() for r in fresh]
    runs = c.wait_terminal(fresh, timeout=60)
    recovered_s = time.monotonic() - restarted
    for run_id, run in runs.items():
        assert run["status"] == "succeeded", run
        log = c.events(run_id)
        check_log(run, log)
    c.join(followers, 30)
    for follower in followers:
        follower.assert_exactly(c.events(follower.run_id))
    assert c.http.get(f"{api}/healthz").status_code == 200
    report(f"Redis restarted empty: while down {len(answers)} routes answered 503 with a detail "
           f"(none 500); after: old runs 404, {len(fresh)} new runs succeeded end to end within "
           f"{recovered_s:.1f} s of the restart")


# -- 5. a hundred disconnects on one long stream ---------------------------------------------------
@pytest.mark.timeout(200)
def test_a_hundred_random_disconnects_on_one_long_stream(cluster_factory):
    c = cluster_factory()
    c.start_workers(1, concurrency=2)
    c.start_api()
    words = 2_000
    run_id = c.submit("tokens", {"text": text(words), "delay": 0.003})
    seed = random.randrange(1 << 30)
    follower = Follower(c.api_url, run_id, cut_bytes=(50, 3_000), seed=seed).start()
    follower.join(150)
    assert c.wait_terminal([run_id], timeout=30)[run_id]["status"] == "succeeded"
    log = c.events(run_id, limit=300)  # seven pages
    assert len(log) == words + 2
    follower.assert_exactly(log)
    report(f"SSE resumed with Last-Event-ID: {follower.drops} random cuts (mid-frame included) "
           f"over one stream of {len(log)} events, log reconstructed exactly (seed {seed})")
    assert follower.drops >= 100


# -- 6. a slow SSE consumer ------------------------------------------------------------------------
class SlowConsumer(threading.Thread):
    """A raw-socket SSE client with a tiny receive buffer reading 16 bytes every 50 ms."""

    def __init__(self, api_url: str, run_id: str) -> None:
        super().__init__(daemon=True)
        host, port = api_url.removeprefix("http://").split(":")
        self.address = (host, int(port))
        self.run_id = run_id
        self.received = 0
        self.stopping = threading.Event()

    def run(self) -> None:
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
            sock.connect(self.address)
            sock.sendall(f"GET /runs/{self.run_id}/stream HTTP/1.1\r\nHost: x\r\n"
                         "Accept: text/event-stream\r\n\r\n".encode())
            while not self.stopping.wait(0.05):
                chunk = sock.recv(16)
                if not chunk:
                    return
                self.received += len(chunk)


def test_a_slow_sse_consumer_stalls_nobody(cluster_factory):
    c = cluster_factory()
    c.start_workers(2, concurrency=2)
    c.start_api()
    big = c.submit("chatty", {"n": 20_000})  # about 3 MB of SSE
    slow = SlowConsumer(c.api_url, big)
    slow.start()
    started = time.monotonic()
    same = Follower(c.api_url, big).start()
    other_run = c.submit("tokens", {"text": text(300), "delay": 0.005})
    other = Follower(c.api_url, other_run).start()
    same.join(60)
    other.join(60)
    same_s, other_s = same.finished_at - started, other.finished_at - started
    runs = c.wait_terminal([big, other_run], timeout=30)
    assert all(run["status"] == "succeeded" for run in runs.values())
    big_log = c.events(big, limit=5_000)
    same.assert_exactly(big_log)
    other.assert_exactly(c.events(other_run))
    stream_bytes = sum(len(f.data) for f in same.frames)
    assert slow.is_alive() and slow.received < stream_bytes / 10, (
        "the slow consumer was not slow: the test proves little")
    fresh = c.submit("echo", {"after": "slow"})
    follower = Follower(c.api_url, fresh).start()
    follower.join(15)
    slow.stopping.set()
    slow.join(5)
    report(f"slow SSE consumer ({slow.received} of ~{stream_bytes} bytes read): the other "
           f"subscriber of its run got all {len(big_log)} events in {same_s:.1f} s, a subscriber "
           f"of another run finished in {other_s:.1f} s; runs finished")
    assert same_s < 20 and other_s < 20


def test_outage_longer_than_the_heartbeat_period_does_not_run_a_live_run_twice(cluster_factory):
    """Every heartbeat stops while Redis is down: a reaper must not take a live run for lost."""
    from streaming.constants import HEARTBEAT_STALE_S

    c = cluster_factory(persist=True)
    c.start_workers(2, concurrency=2)
    c.start_api()
    run_ids = [c.submit("rel_sleep", {"seconds": HEARTBEAT_STALE_S + 12}) for _ in range(4)]
    deadline = time.monotonic() + 30
    while any(c.run(run_id)["status"] != "running" for run_id in run_ids):
        assert time.monotonic() < deadline, "the runs did not start"
        time.sleep(0.05)
    c.server.stop()
    time.sleep(HEARTBEAT_STALE_S + 4)  # longer than a heartbeat may be stale
    c.server.start()
    runs = c.wait_terminal(run_ids, timeout=90)
    for run_id, run in runs.items():
        log = c.events(run_id)
        check_log(run, log)
        assert run["status"] == "succeeded", run
        assert [e["data"]["attempt"] for e in log if e["type"] == "started"] == [1], run_id
    report(f"Redis down {HEARTBEAT_STALE_S + 4:g} s under 4 live runs: each executed once")
