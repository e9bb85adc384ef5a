"""The Python client (`api.client`) against the real server: every call, typed errors, and the
reconnecting stream with its connections cut by a TCP proxy between client and API."""

from __future__ import annotations

import secrets
import socket
import threading
import time
from urllib.parse import urlsplit

import pytest

from api.client import (
    AsyncClient,
    Client,
    Conflict,
    InvalidRequest,
    NotFound,
    RuncastClientError,
    ServerUnavailable,
    Unauthorized,
)
from api.schemas import AgentList, BatchCreated, BatchStatus, EventsPage, Health, Run, RunList
from streaming.events import Event
from tests.api_helpers import marker, words
from tests.redis_server import free_port
from tests.services import start_api

KEY = "client-key-" + secrets.token_hex(8)


# A TCP proxy the test can cut


class CuttingProxy:
    """Forwards 127.0.0.1:<port> to the API; `cut()` closes every open connection at once;
    `refuse(seconds)` closes new connections on accept for a while."""

    def __init__(self, upstream_url: str) -> None:
        parts = urlsplit(upstream_url)
        self.upstream = (parts.hostname, parts.port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.lock = threading.Lock()
        self.open: set[socket.socket] = set()
        self.requests: list[bytes] = []  # the first bytes of each client connection
        self.connections = 0
        self.cuts = 0
        self.refuse_until = 0.0
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if time.monotonic() < self.refuse_until:
                client.close()
                continue
            try:
                upstream = socket.create_connection(self.upstream)
            except OSError:
                client.close()
                continue
            with self.lock:
                self.connections += 1
                self.open.update((client, upstream))
                index = len(self.requests)
                self.requests.append(b"")
            threading.Thread(target=self._pump, args=(client, upstream, index),
                             daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, None),
                             daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, index: int | None) -> None:
        try:
            while data := source.recv(65_536):
                if index is not None and len(self.requests[index]) < 4096:
                    self.requests[index] += data
                sink.sendall(data)
        except OSError:
            pass
        finally:
            self._drop(source, sink)

    def _drop(self, *sockets: socket.socket) -> None:
        for sock in sockets:
            with self.lock:
                self.open.discard(sock)
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()

    def cut(self) -> None:
        with self.lock:
            victims = list(self.open)
            self.cuts += 1
        self._drop(*victims)

    def refuse(self, seconds: float) -> None:
        self.refuse_until = time.monotonic() + seconds

    def stream_requests(self) -> list[str]:
        return [r.decode("latin-1") for r in self.requests if b"/stream" in r.split(b"\r\n")[0]]

    def close(self) -> None:
        self.closed = True
        self.listener.close()
        self.cut()


def last_event_ids(requests: list[str]) -> list[int]:
    found = []
    for request in requests:
        for line in request.split("\r\n"):
            name, _, value = line.partition(":")
            if name.strip().lower() == "last-event-id":
                found.append(int(value.strip()))
    return found


@pytest.fixture
def proxy(api_url):
    proxy = CuttingProxy(api_url)
    yield proxy
    proxy.close()


@pytest.fixture(scope="module")
def client(api_url):
    with Client(api_url) as client:
        yield client


@pytest.fixture(scope="module")
def auth_url(redis_url, worker):
    process, url = start_api(redis_url, RUNCAST_API_KEYS=KEY,
                             RUNCAST_SECRET=secrets.token_hex(32))
    yield url
    process.stop()


def assert_whole_log(events: list[Event], run_id: str, n_tokens: int) -> None:
    assert [e.seq for e in events] == list(range(1, n_tokens + 3))  # once each, in order
    assert {e.run_id for e in events} == {run_id}
    assert events[0].type == "started" and events[-1].type == "complete"
    assert [e.type for e in events[1:-1]] == ["token"] * n_tokens
    assert [e.data["content"] for e in events[1:-1]] == [f"w{i} " for i in range(n_tokens)]


# Client: calls


def test_health_and_agents(client):
    health = client.health()
    assert isinstance(health, Health)
    assert health.status == "ok" and health.redis == "ok" and health.workers >= 1
    agents = client.agents()
    assert isinstance(agents, AgentList)
    assert {"echo", "tokens", "sleep"} <= {a.name for a in agents.agents}


def test_submit_get_wait_events(client):
    run = client.submit("tokens", {"text": "a b c"}, metadata={"m": 1})
    assert isinstance(run, Run)
    assert run.agent == "tokens" and run.metadata == {"m": 1} and run.stream_token
    assert client.get(run.run_id).run_id == run.run_id
    done = client.wait(run.run_id, timeout=30)
    assert done.status == "succeeded" and done.is_terminal
    assert done.output == {"text": "a b c"}
    page = client.events(run.run_id)
    assert isinstance(page, EventsPage)
    assert page.done is True and page.next_after == 5
    assert [e.type for e in page.events] == ["started", "token", "token", "token", "complete"]
    second = client.events(run.run_id, after=2, limit=2)
    assert [e.seq for e in second.events] == [3, 4] and second.done is False


def test_wait_with_a_timeout_returns_the_unfinished_run(client):
    run = client.submit("sleep", {"seconds": 30})
    try:
        started = time.monotonic()
        waited = client.wait(run.run_id, timeout=1)
        assert waited.status in {"queued", "running"}
        assert time.monotonic() - started < 15
    finally:
        client.cancel(run.run_id)


def test_cancel_and_conflict(client):
    run = client.submit("sleep", {"seconds": 30})
    cancelled = client.cancel(run.run_id, reason="enough")
    assert isinstance(cancelled, Run) and cancelled.cancel_requested
    assert client.wait(run.run_id, timeout=30).status == "cancelled"
    with pytest.raises(Conflict) as info:
        client.cancel(run.run_id)
    assert info.value.status_code == 409 and info.value.detail


def test_list_runs(client):
    ids = [client.submit("echo", {"i": i}).run_id for i in range(3)]
    for run_id in ids:
        client.wait(run_id, timeout=30)
    page = client.list_runs(agent="echo", limit=2)
    assert isinstance(page, RunList)
    assert [r.run_id for r in page.runs] == ids[::-1][:2]
    assert page.next_cursor
    rest = client.list_runs(agent="echo", limit=1, cursor=page.next_cursor)
    assert rest.runs[0].run_id == ids[0]
    succeeded = client.list_runs(status="succeeded", agent="echo", limit=3)
    assert {r.status for r in succeeded.runs} == {"succeeded"}


def test_batches(client):
    created = client.submit_batch([{"agent": "echo", "input": {"i": i}} for i in range(3)],
                                  metadata={"b": 1})
    assert isinstance(created, BatchCreated)
    assert created.total == 3 and len(created.run_ids) == 3
    for run_id in created.run_ids:
        assert client.wait(run_id, timeout=30).batch_id == created.batch_id
    status = client.batch(created.batch_id)
    assert isinstance(status, BatchStatus)
    assert status.done and status.counts == {"succeeded": 3} and status.total == 3
    assert {r.run_id for r in client.list_runs(batch_id=created.batch_id).runs} == set(
        created.run_ids)


def test_typed_errors(client, auth_url):
    with pytest.raises(NotFound) as info:
        client.get(marker())
    assert info.value.status_code == 404
    with pytest.raises(NotFound):
        client.submit("no-such-agent")
    with pytest.raises(NotFound):
        client.batch(marker())
    with pytest.raises(InvalidRequest) as info:
        client.submit("echo", events=["bogus"])
    assert info.value.status_code == 422
    with pytest.raises(InvalidRequest):
        client.submit_batch([])
    with pytest.raises(InvalidRequest):
        client.list_runs(status="bogus")
    key = marker()
    client.submit("echo", {"a": 1}, idempotency_key=key)
    assert client.submit("echo", {"a": 1}, idempotency_key=key).run_id
    with pytest.raises(Conflict):
        client.submit("echo", {"a": 2}, idempotency_key=key)
    with pytest.raises(NotFound):
        list(client.stream(marker()))
    with Client(auth_url) as anonymous, pytest.raises(Unauthorized) as info:
        anonymous.agents()
    assert info.value.status_code == 401
    with Client(auth_url, api_key="wrong") as wrong, pytest.raises(Unauthorized):
        wrong.submit("echo")
    with Client(auth_url, api_key=KEY) as keyed:
        run = keyed.submit("echo", {"x": 1})
        assert keyed.wait(run.run_id, timeout=30).output == {"echo": {"x": 1}}
        assert [e.seq for e in keyed.stream(run.run_id)] == [1, 2]
    for error in (NotFound, Conflict, InvalidRequest, Unauthorized, ServerUnavailable):
        assert issubclass(error, RuncastClientError)


def test_unreachable_server_is_server_unavailable():
    with Client(f"http://127.0.0.1:{free_port()}", timeout=2) as nowhere, pytest.raises(
            ServerUnavailable) as info:
        nowhere.health()
    assert info.value.status_code is None


# Client: streams


def test_stream_yields_the_whole_log(client):
    run = client.submit("tokens", {"text": words(5), "delay": 0.02})
    with client.stream(run.run_id) as stream:
        assert stream.run_id == run.run_id
        events = list(stream)
    assert_whole_log(events, run.run_id, 5)
    assert [e.seq for e in client.stream(run.run_id, after=4)] == [5, 6, 7]


def test_stream_reconnects_after_cuts_and_yields_each_event_once(client, proxy):
    n = 50
    run = client.submit("tokens", {"text": words(n), "delay": 0.04})
    events: list[Event] = []
    cut_at = {8, 25}
    with Client(proxy.url, reconnect_timeout=30) as via_proxy:
        for event in via_proxy.stream(run.run_id):
            events.append(event)
            if event.seq in cut_at:
                assert via_proxy.get(run.run_id).status == "running"  # cut mid-run
                proxy.cut()
                if event.seq == 25:
                    proxy.refuse(0.5)  # and the first reconnects fail
    assert_whole_log(events, run.run_id, n)
    assert proxy.cuts >= 2
    streams = proxy.stream_requests()
    assert len(streams) >= 3
    resumed = last_event_ids(streams)
    assert resumed and min(resumed) >= 8, streams
    assert client.get(run.run_id).status == "succeeded"


def test_submit_stream_follows_the_run_across_a_cut(client, proxy):
    n = 30
    events: list[Event] = []
    with Client(proxy.url, reconnect_timeout=30) as via_proxy:
        stream = via_proxy.submit_stream("tokens", {"text": words(n), "delay": 0.04})
        for event in stream:
            events.append(event)
            if event.seq == 5:
                proxy.cut()
        run_id = stream.run_id
    assert run_id
    assert_whole_log(events, run_id, n)
    assert last_event_ids(proxy.stream_requests())
    assert client.get(run_id).status == "succeeded"


# AsyncClient


async def test_async_client_calls(api_url, auth_url):
    async with AsyncClient(api_url) as client:
        health = await client.health()
        assert health.status == "ok" and health.workers >= 1
        assert "echo" in {a.name for a in (await client.agents()).agents}

        run = await client.submit("countdown", {"steps": 2, "delay": 0.01})
        assert (await client.get(run.run_id)).run_id == run.run_id
        done = await client.wait(run.run_id, timeout=30)
        assert done.status == "succeeded" and done.output == {"steps": 2}
        page = await client.events(run.run_id, after=1)
        assert [e.type for e in page.events] == ["progress", "progress", "complete"]
        assert page.done

        sleeper = await client.submit("sleep", {"seconds": 30})
        assert (await client.wait(sleeper.run_id, timeout=0.5)).status in {"queued", "running"}
        assert (await client.cancel(sleeper.run_id, reason="r")).cancel_requested
        assert (await client.wait(sleeper.run_id, timeout=30)).status == "cancelled"
        with pytest.raises(Conflict):
            await client.cancel(sleeper.run_id)

        listed = await client.list_runs(agent="countdown", limit=1)
        assert listed.runs[0].run_id == run.run_id

        batch = await client.submit_batch([{"agent": "echo"}, {"agent": "echo"}])
        for run_id in batch.run_ids:
            await client.wait(run_id, timeout=30)
        status = await client.batch(batch.batch_id)
        assert status.done and status.counts == {"succeeded": 2}

        with pytest.raises(NotFound):
            await client.get(marker())
        with pytest.raises(NotFound):
            await client.submit("no-such-agent")
        with pytest.raises(InvalidRequest):
            await client.submit("echo", timeout=-1)
        key = marker()
        await client.submit("echo", {"a": 1}, idempotency_key=key)
        with pytest.raises(Conflict):
            await client.submit("echo", {"a": 2}, idempotency_key=key)
    async with AsyncClient(auth_url) as anonymous:
        with pytest.raises(Unauthorized):
            await anonymous.list_runs()
    async with AsyncClient(auth_url, api_key=KEY) as keyed:
        assert (await keyed.list_runs(limit=1)).runs is not None


async def test_async_stream_reconnects_after_cuts(client, proxy):
    n = 50
    run = client.submit("async_tokens", {"text": words(n), "delay": 0.04})
    events: list[Event] = []
    async with AsyncClient(proxy.url, reconnect_timeout=30) as via_proxy, via_proxy.stream(
            run.run_id) as stream:
        async for event in stream:
            events.append(event)
            if event.seq in (10, 30):
                proxy.cut()
    assert_whole_log(events, run.run_id, n)
    assert proxy.cuts >= 2 and len(proxy.stream_requests()) >= 3
    assert min(last_event_ids(proxy.stream_requests())) >= 10


async def test_async_submit_stream(api_url):
    async with AsyncClient(api_url) as client:
        stream = client.submit_stream("tokens", {"text": words(4)})
        events = [event async for event in stream]
        assert stream.run_id
    assert_whole_log(events, stream.run_id, 4)
