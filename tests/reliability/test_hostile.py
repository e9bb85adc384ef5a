"""Hostile input (issue 6, "Reliability"): whatever a caller sends, the API answers with a clear
4xx (JSON with a `detail`) or handles it, never a 5xx, and no worker dies of it.

One redis-server, one Celery worker and two APIs (open, and with keys) for this module only.
After every test the API log must hold no unhandled exception and the worker must still serve a
run (`services` fixture).

    .venv/bin/pytest tests/reliability/test_hostile.py
"""

from __future__ import annotations

import builtins
import contextlib
import json
import pickle
import re
import secrets
import socket
import time
import uuid
from types import SimpleNamespace

import httpx
import kombu
import pytest
import redis
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
)

from tests.api_helpers import parse_body
from tests.redis_server import RedisServer
from tests.runs_support import eventually
from tests.services import http_client, start_api, start_worker

pytestmark = pytest.mark.reliability

AGENTS = "tasks.demo,tests.reliability.hostile_agents"
KEYS = ("k1", "k2")
MAX_INPUT_BYTES = 1_048_576
POSITIVE_EXAMPLES = 100  # schemathesis examples per operation, schema-valid
NEGATIVE_EXAMPLES = 50  # ... and schema-invalid
ASGI_CRASH = "Exception in ASGI application"


@pytest.fixture(scope="module")
def services(tmp_path_factory):
    marker = tmp_path_factory.mktemp("hostile") / "imported"
    env = {"RUNCAST_AGENTS": AGENTS, "RUNCAST_TEST_IMPORT_MARKER": str(marker)}
    with contextlib.ExitStack() as stop:
        server = RedisServer().start()
        stop.callback(server.cleanup)
        worker = start_worker(server.url, f"hostile-{server.port}", 2, **env)
        stop.callback(worker.stop)
        api, url = start_api(server.url, RUNCAST_MAX_INPUT_BYTES=str(MAX_INPUT_BYTES), **env)
        stop.callback(api.stop)
        secured, secured_url = start_api(server.url, RUNCAST_API_KEYS=",".join(KEYS),
                                         RUNCAST_SECRET=secrets.token_hex(32), **env)
        stop.callback(secured.stop)
        client = redis.Redis.from_url(server.url)
        stop.callback(client.close)
        yield SimpleNamespace(url=url, secured_url=secured_url, api=api, secured=secured,
                              worker=worker, redis=client, redis_url=server.url, marker=marker)


@pytest.fixture(scope="module")
def http(services):
    with http_client(services.url) as client:
        yield client


@pytest.fixture(autouse=True)
def still_healthy(services):
    """After each test: no unhandled exception in either API's log, no module imported by a
    name from a request, and the worker still alive and serving a run."""
    logs = {proc.name: len(proc.output()) for proc in (services.api, services.secured)}
    yield
    for proc in (services.api, services.secured):
        new = proc.output()[logs[proc.name]:]
        assert ASGI_CRASH not in new and "Traceback" not in new, new[-3000:]
    assert not services.marker.exists(), services.marker.read_text()
    assert_worker_serves(services)


def assert_worker_serves(services) -> None:
    assert services.worker.proc.poll() is None, services.worker.output()[-3000:]
    with http_client(services.url) as http:
        run = http.post("/runs", json={"agent": "echo", "input": {"alive": True}}).json()
        done = http.get(f"/runs/{run['run_id']}/wait", params={"timeout": 30}).json()
    assert done["status"] == "succeeded" and done["output"] == {"echo": {"alive": True}}, done


def assert_clear_4xx(response: httpx.Response, *statuses: int) -> dict:
    """A 4xx (one of `statuses` when given) with a JSON body holding a non-empty `detail`."""
    assert 400 <= response.status_code < 500, (response.status_code, response.text[:500])
    if statuses:
        assert response.status_code in statuses, (response.status_code, response.text[:500])
    assert response.headers["content-type"].startswith("application/json"), response.headers
    body = response.json()
    assert body.get("detail"), body
    assert "x-evil" not in response.headers
    return body


def raw_request(url: str, head: bytes, body: bytes = b"") -> tuple[int, bytes]:
    """Send bytes as they are (no client-side checks); the status and the whole response."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(head + body)
        data = b""
        with contextlib.suppress(ConnectionResetError):
            while chunk := sock.recv(65536):
                data += chunk
    status = int(data.split(b" ", 2)[1])
    return status, data


def wait_run(http: httpx.Client, run_id: str, timeout: float = 60) -> dict:
    response = http.get(f"/runs/{run_id}/wait", params={"timeout": timeout}, timeout=timeout + 30)
    assert response.status_code == 200, response.text
    return response.json()


# -- schemathesis ---------------------------------------------------------------------------

OPERATIONS = [
    ("POST", "/runs"), ("POST", "/runs/stream"), ("GET", "/runs"), ("GET", "/runs/{run_id}"),
    ("GET", "/runs/{run_id}/wait"), ("GET", "/runs/{run_id}/events"),
    ("GET", "/runs/{run_id}/stream"), ("POST", "/runs/{run_id}/cancel"), ("POST", "/batches"),
    ("GET", "/batches/{batch_id}"), ("POST", "/batches/{batch_id}/cancel"), ("GET", "/agents"),
    ("GET", "/healthz"),
]
NO_INPUT = {("GET", "/agents"), ("GET", "/healthz")}


@pytest.fixture(scope="module")
def api_schema(services):
    return schemathesis.openapi.from_url(f"{services.url}/openapi.json")


# Invalid examples need a parameter or a body to make invalid.
CASES = [
    pytest.param(method, path, mode, id=f"{method} {path}-{mode.value}")
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
    for method, path in OPERATIONS
    if mode is GenerationMode.POSITIVE or (method, path) not in NO_INPUT
]


@pytest.mark.parametrize("method, path, mode", CASES)
def test_schemathesis_no_5xx_and_responses_match_the_schema(services, api_schema, method, path,
                                                            mode):
    examples = POSITIVE_EXAMPLES if mode is GenerationMode.POSITIVE else NEGATIVE_EXAMPLES
    operation = api_schema[path][method]

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(max_examples=examples, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    def check(case):
        case.call_and_validate(
            base_url=services.url, timeout=60,
            checks=[not_a_server_error, response_schema_conformance, content_type_conformance],
        )

    check()


# -- sizes and shapes -----------------------------------------------------------------------

BODY_ROUTES = ["/runs", "/runs/stream", "/batches", "/runs/0123abcd/cancel"]


@pytest.mark.parametrize("path", BODY_ROUTES)
def test_oversized_bodies_are_413_with_or_without_content_length(http, path):
    big = b'{"agent":"echo","input":{"x":"' + b"a" * (MAX_INPUT_BYTES + 10) + b'"}}'
    headers = {"content-type": "application/json"}
    body = assert_clear_4xx(http.post(path, content=big, headers=headers), 413)
    assert str(MAX_INPUT_BYTES) in body["detail"]

    def chunks():  # no Content-Length: Transfer-Encoding chunked
        for start in range(0, len(big), 65_536):
            yield big[start:start + 65_536]

    response = http.post(path, content=chunks(), headers=headers)
    assert "content-length" not in response.request.headers
    assert_clear_4xx(response, 413)


def test_lying_or_malformed_content_length_is_a_4xx(services):
    big = b'{"agent":"echo","input":{"x":"' + b"a" * 100_000 + b'"}}'
    for header in (b"10", b"-1", b"99999999999999999999999", b"abc", b"5\r\nContent-Length: 9"):
        status, data = raw_request(
            services.url,
            b"POST /runs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Connection: close\r\nContent-Length: " + header + b"\r\n\r\n", big)
        assert 400 <= status < 500, (header, data[:300])


def nested(depth: int, opener: bytes = b"[", closer: bytes = b"]", leaf: bytes = b"") -> bytes:
    return opener * depth + leaf + closer * depth


def test_deeply_nested_json_is_refused_and_never_poisons_the_api(http):
    headers = {"content-type": "application/json"}

    def post(path: str, body: bytes) -> httpx.Response:
        return http.post(path, content=body, headers=headers)

    for depth in (100_000, 5_000, 990):  # beyond what a JSON parser takes: 400
        assert_clear_4xx(post("/runs", b'{"agent":"echo","input":' + nested(depth) + b"}"), 400,
                         422)
    for depth in (101, 500, 900):  # parsed, but deeper than MAX_INPUT_DEPTH (100): 422
        body = assert_clear_4xx(post("/runs", b'{"agent":"echo","input":' + nested(depth) + b"}"),
                                422)
        assert "deeper than 100" in body["detail"]
        assert_clear_4xx(post("/runs", b'{"agent":"echo","metadata":'
                              + nested(depth, b'{"a":', b"}", b"1") + b"}"), 422)
        assert_clear_4xx(post("/batches", b'{"runs":[{"agent":"echo"}],"metadata":'
                              + nested(depth, b'{"a":', b"}", b"1") + b"}"), 422)
        assert_clear_4xx(post("/runs", b'{"agent":' + nested(depth) + b"}"), 422)
        assert_clear_4xx(post("/runs/0123abcd/cancel", b'{"reason":' + nested(depth) + b"}"),
                         422)
    # at the limit: accepted, run, and readable everywhere
    run = post("/runs", b'{"agent":"echo","input":' + nested(100, leaf=b"7") + b"}")
    assert run.status_code == 202, run.text
    done = wait_run(http, run.json()["run_id"])
    assert done["status"] == "succeeded", done
    depth, value = 0, done["output"]["echo"]
    while isinstance(value, list):
        depth, value = depth + 1, value[0]
    assert (depth, value) == (100, 7)
    # an agent's output nested too deep fails the run at once (no retry, no worker_lost)
    for depth in (300, 5_000):
        run = http.post("/runs", json={"agent": "h_deep_output", "input": {"depth": depth}})
        done = wait_run(http, run.json()["run_id"], timeout=20)
        assert done["status"] == "failed" and done["attempt"] == 1, done
        assert done["error"]["code"] == "invalid_output" and "deeper" in done["error"]["error"]
    assert http.get("/runs", params={"limit": 1000}).status_code == 200


def test_huge_event_data_and_output_do_not_kill_the_worker(http):
    size = 5 * 1024 * 1024
    for agent, field in (("h_big_event", None), ("h_big_output", "blob")):
        run = http.post("/runs", json={"agent": agent, "input": {"size": size}}).json()
        with http.stream("GET", f"/runs/{run['run_id']}/stream") as response:
            assert response.status_code == 200
            frames = parse_body(response.read().decode())
        done = wait_run(http, run["run_id"])
        if done["status"] == "failed":  # allowed, when it says why
            assert done["error"]["code"] and done["error"]["error"], done
            continue
        assert done["status"] == "succeeded", done
        events = http.get(f"/runs/{run['run_id']}/events").json()["events"]
        assert [f.data for f in frames] == events
        if field is None:
            big = [e for e in events if e["type"] == "custom:big"]
            assert len(big) == 1 and len(big[0]["data"]["blob"]) == size
        else:
            assert len(done["output"][field]) == size


def test_non_utf8_bytes_and_lone_surrogates_are_4xx(http):
    headers = {"content-type": "application/json"}
    bodies = {
        "/runs": [b'{"agent":"echo","input":{"x":"\xff\xfe"}}', b'{"agent":"\xc3\x28"}',
                  b"\xef\xbb\xbf\xff" * 10, b'{"agent":"echo","input":"\xed\xa0\x80"}'],
        "/batches": [b'{"runs":[{"agent":"echo","input":"\x80"}]}'],
        "/runs/0123abcd/cancel": [b'{"reason":"\xfe"}'],
    }
    for path, payloads in bodies.items():
        for payload in payloads:
            assert_clear_4xx(http.post(path, content=payload, headers=headers), 400, 422)
    # valid JSON escapes that decode to lone surrogates: not storable, not echoable
    surrogates = [
        ("/runs", {"agent": "echo", "input": {"x": "\\ud800"}}),
        ("/runs", {"agent": "echo", "input": {"\\udfff": 1}}),
        ("/runs", {"agent": "\\ud800"}),
        ("/runs", {"agent": "echo", "metadata": {"k": "\\udbff"}}),
        ("/runs", {"agent": "echo", "idempotency_key": "\\ud800"}),
        ("/runs", {"agent": "echo", "events": ["\\ud800"]}),
        ("/runs", {"agent": "echo", "\\ud800": 1}),
        ("/runs/stream", {"agent": "echo", "input": ["\\ud800"]}),
        ("/batches", {"runs": [{"agent": "echo", "input": "\\ud800"}]}),
        ("/batches", {"runs": [{"agent": "echo"}], "metadata": {"k": "\\ud800"}}),
        ("/runs/0123abcd/cancel", {"reason": "\\ud800"}),
    ]
    for path, body in surrogates:
        raw = json.dumps(body).replace("\\\\u", "\\u").encode()
        assert b"\\ud" in raw
        assert_clear_4xx(http.post(path, content=raw, headers=headers), 422)
    # an agent that raises, or returns, text with a lone surrogate: failed at once, readable
    for agent, code in (("h_bad_error", "agent_error"), ("h_bad_output", "invalid_output")):
        done = wait_run(http, http.post("/runs", json={"agent": agent}).json()["run_id"], 20)
        assert done["status"] == "failed" and done["attempt"] == 1, done
        assert done["error"]["code"] == code, done


NAN_BODIES = [
    (b'{"agent":"echo","input":{"x":NaN}}', "/runs"),
    (b'{"agent":"echo","input":[Infinity]}', "/runs"),
    (b'{"agent":"echo","input":-Infinity}', "/runs/stream"),
    (b'{"agent":"echo","metadata":{"m":NaN}}', "/runs"),
    (b'{"agent":NaN}', "/runs"),
    (b'{"agent":"echo","timeout":NaN}', "/runs"),
    (b'{"agent":"echo","timeout":Infinity}', "/runs"),
    (b'{"agent":"echo","metadata":NaN}', "/runs"),
    (b'{"runs":NaN}', "/batches"),
    (b'{"runs":[{"agent":"echo","input":NaN}]}', "/batches"),
    (b'{"runs":[{"agent":"echo"}],"metadata":{"m":Infinity}}', "/batches"),
    (b'{"reason":NaN}', "/runs/0123abcd/cancel"),
]


@pytest.mark.parametrize("body, path", NAN_BODIES, ids=[b.decode() for b, _ in NAN_BODIES])
def test_nan_and_infinity_are_422(http, body, path):
    assert_clear_4xx(http.post(path, content=body, headers={"content-type": "application/json"}),
                     422)


# -- headers and paths ----------------------------------------------------------------------

def test_header_injection_in_ids_and_last_event_id(services, http):
    run = http.post("/runs", json={"agent": "tokens", "input": {"text": "a b c"}}).json()
    wait_run(http, run["run_id"])
    evil = "1%0d%0aX-Evil:%201"
    for path in (f"/runs/{evil}", f"/runs/{evil}/events", f"/runs/{evil}/stream",
                 f"/runs/{evil}/wait", f"/batches/{evil}", f"/runs/{evil}%0d%0a%0d%0a"):
        assert_clear_4xx(http.get(path), 404)
    for path in (f"/runs/{evil}/cancel", f"/batches/{evil}/cancel"):
        assert_clear_4xx(http.post(path), 404)
    stream = f"/runs/{run['run_id']}/stream"
    for value in ("1%0d%0aX-Evil: 1", "1 2", "-1", "1e3", "0x10", "9" * 40, "\u00b2",
                  "\u0661", "1\tX-Evil"):
        response = http.get(stream, headers={"Last-Event-ID": value.encode("latin-1", "replace")})
        assert_clear_4xx(response, 422)
    # raw CR or LF inside a header value: the HTTP server refuses it, or it never reaches a header
    for head in (b"Last-Event-ID: 1\rX-Evil: 1\r\n", b"Idempotency-Key: a\rX-Evil: 1\r\n",
                 b"Last-Event-ID: 1\nX-Evil: 1\r\n", b"Authorization: Bearer k\r X-Evil: 1\r\n"):
        status, data = raw_request(services.url, b"GET " + stream.encode() + b" HTTP/1.1\r\n"
                                   b"Host: x\r\nConnection: close\r\n" + head + b"\r\n")
        response_head = data.split(b"\r\n\r\n", 1)[0].lower()
        assert status < 500 and b"x-evil" not in response_head, data[:500]
    status, data = raw_request(services.url, b"GET /runs/1\r\nX-Evil: 1 HTTP/1.1\r\nHost: x\r\n"
                               b"Connection: close\r\n\r\n")
    assert status == 400 and b"x-evil" not in data.lower()


def test_ids_with_path_characters_are_404(services, http):
    before = set(services.redis.scan_iter(match="runcast:*", count=1000))
    for run_id in ("..%2F..%2Fetc", "..%2F..%2Fetc%2Fpasswd", "%2e%2e", "%00", "a%00b",
                   "..", "%2F", "*", "runcast:runs", "%25", "a" * 5000, "%ff%fe",
                   "abc%20def", "%e2%80%ae"):
        for path in (f"/runs/{run_id}", f"/runs/{run_id}/events", f"/runs/{run_id}/wait",
                     f"/runs/{run_id}/stream", f"/batches/{run_id}"):
            response = http.get(path)
            if response.status_code == 307:  # "/runs/%2F" is "/runs//": Starlette drops a slash
                assert response.headers["location"] in (f"{services.url}/runs",
                                                        f"{services.url}/batches"), path
                continue
            assert_clear_4xx(response, 404, 422)
        assert_clear_4xx(http.post(f"/runs/{run_id}/cancel"), 404, 422)
    for raw in (b"/runs/../../etc/passwd", b"/runs/%2e%2e/%2e%2e/etc", b"/runs/\x00",
                b"/batches/../runs"):
        status, data = raw_request(services.url, b"GET " + raw + b" HTTP/1.1\r\nHost: x\r\n"
                                   b"Connection: close\r\n\r\n")
        assert 400 <= status < 500, (raw, data[:300])
    # nothing was created or touched under a made-up name
    after = set(services.redis.scan_iter(match="runcast:*", count=1000))
    pattern = re.compile(rb"runcast:((run|events|batch|batch-runs):[0-9a-f]{32}|[a-z-]+-lock)")
    assert all(pattern.fullmatch(k) for k in after - before), after - before


# -- auth -----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def secured(services):
    """Two finished runs and a batch on the API with keys, and clients with and without a key."""
    admin = http_client(services.secured_url, headers={"Authorization": f"Bearer {KEYS[1]}"})
    anon = http_client(services.secured_url)
    runs = []
    for _ in range(2):
        run = admin.post("/runs", json={"agent": "tokens", "input": {"text": "a b"}})
        assert run.status_code == 202, run.text
        runs.append(wait_run(admin, run.json()["run_id"]))
    batch = admin.post("/batches", json={"runs": [{"agent": "echo"}]}).json()
    yield SimpleNamespace(admin=admin, anon=anon, a=runs[0], b=runs[1], batch=batch)
    admin.close()
    anon.close()


def every_route(run_id: str, batch_id: str) -> list[tuple[str, str, dict]]:
    return [
        ("POST", "/runs", {"json": {"agent": "echo"}}),
        ("POST", "/runs/stream", {"json": {"agent": "echo"}}),
        ("GET", "/runs", {}),
        ("GET", f"/runs/{run_id}", {}),
        ("GET", f"/runs/{run_id}/wait", {"params": {"timeout": 1}}),
        ("GET", f"/runs/{run_id}/events", {}),
        ("GET", f"/runs/{run_id}/stream", {}),
        ("POST", f"/runs/{run_id}/cancel", {"json": {"reason": None}}),
        ("POST", "/batches", {"json": {"runs": [{"agent": "echo"}]}}),
        ("GET", f"/batches/{batch_id}", {}),
        ("POST", f"/batches/{batch_id}/cancel", {}),
        ("GET", "/agents", {}),
    ]


def assert_401(response: httpx.Response) -> None:
    assert_clear_4xx(response, 401)
    assert response.headers["www-authenticate"].lower().startswith("bearer")


def with_param(kwargs: dict, **params: str) -> dict:
    return {**kwargs, "params": {**kwargs.get("params", {}), **params}}


def test_auth_every_route_needs_a_valid_key(secured):
    routes = every_route(secured.a["run_id"], secured.batch["batch_id"])
    wrong = ["k3", "K1", "k", "k1k2", "k1,k2", "-", secrets.token_hex(16),
             secured.a["stream_token"], "\u00ff\u00fe"]
    for method, path, kwargs in routes:
        assert_401(secured.anon.request(method, path, **kwargs))
        for key in wrong:
            headers = {"Authorization": f"Bearer {key}".encode("latin-1")}
            assert_401(secured.anon.request(method, path, headers=headers, **kwargs))
        for header in (f"Basic {KEYS[0]}", KEYS[0], f"Token {KEYS[0]}", f"Bearer{KEYS[0]}"):
            assert_401(secured.anon.request(method, path, headers={"Authorization": header},
                                            **kwargs))
        # a key is no stream token, and a token is no key
        assert_401(secured.anon.request(method, path, **with_param(kwargs, token=KEYS[0])))
    health = secured.anon.get("/healthz")
    assert health.status_code == 200 and health.json()["status"] == "ok"


def test_auth_stream_tokens_read_their_own_run_only(secured):
    a, b = secured.a, secured.b
    token = a["stream_token"]
    reads = [("GET", f"/runs/{a['run_id']}", {}),
             ("GET", f"/runs/{a['run_id']}/events", {}),
             ("GET", f"/runs/{a['run_id']}/stream", {}),
             ("GET", f"/runs/{a['run_id']}/wait", {"params": {"timeout": 1}})]
    for method, path, kwargs in reads:
        response = secured.anon.request(method, path, **with_param(kwargs, token=token))
        assert response.status_code == 200, (path, response.text)
        forged = [b["stream_token"], token[:-1], token[:20], token + "0", token.upper(),
                  secrets.token_hex(20), "0" * 40, token[1:] + token[0]]
        for bad in forged:
            assert_401(secured.anon.request(method, path, **with_param(kwargs, token=bad)))
        # the token is for `?token=` only, not a bearer key
        assert_401(secured.anon.request(method, path,
                                        headers={"Authorization": f"Bearer {token}"}, **kwargs))
    # a token on a write route, a list or another resource grants nothing
    for method, path, kwargs in every_route(a["run_id"], secured.batch["batch_id"]):
        if method == "GET" and path.startswith(f"/runs/{a['run_id']}"):
            continue  # its own reads, above
        assert_401(secured.anon.request(method, path, **with_param(kwargs, token=token)))
    assert secured.admin.get(f"/runs/{a['run_id']}").json()["status"] == "succeeded"


# -- Celery and the agent registry ----------------------------------------------------------

class OpensAFile:
    """Unpickling this creates a file: proof that a pickle was deserialized."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (builtins.open, (self.path, "w"))


def queued_run(client: redis.Redis) -> str:
    """A run stored as queued, as POST /runs stores it, but never enqueued."""
    from streaming.constants import DEFAULT_MAX_EVENTS
    from streaming.events import utc_now_iso
    from tasks.redis_store import RedisRunStore
    from tasks.store import new_record

    run_id = uuid.uuid4().hex
    record = new_record(run_id, "echo", '{"from":"pickle"}', events="all", timeout=60,
                        metadata={}, batch_id=None, idempotency_key=None, request_hash="x",
                        created_at=utc_now_iso())
    RedisRunStore(client, ttl_s=600, max_events=DEFAULT_MAX_EVENTS).create([record])
    return run_id


def publish(redis_url: str, body: bytes, content_type: str, encoding: str, task: str,
            task_id: str) -> None:
    """A Celery protocol-2 task message, put on the `default` queue by hand."""
    headers = {"lang": "py", "task": task, "id": task_id, "root_id": task_id,
               "parent_id": None, "group": None, "retries": 0, "eta": None, "expires": None,
               "argsrepr": "", "kwargsrepr": "", "origin": "hostile-test", "ignore_result": True}
    with kombu.Connection(redis_url) as connection:
        producer = connection.Producer()
        producer.publish(body, exchange=kombu.Exchange("default", type="direct"),
                         routing_key="default", headers=headers, content_type=content_type,
                         content_encoding=encoding, declare=[kombu.Queue("default")])


def wait_for_log(process, text: str, since: int, timeout: float = 30) -> str:
    deadline = time.monotonic() + timeout
    while text not in (new := process.output()[since:]):
        assert time.monotonic() < deadline, f"{text!r} not in the log:\n{new[-3000:]}"
        time.sleep(0.1)
    return new


def test_a_pickle_message_is_refused_and_never_deserialized(services, tmp_path):
    proof = tmp_path / "unpickled"
    run_id = queued_run(services.redis)
    embed = {"callbacks": None, "errbacks": None, "chain": None, "chord": None,
             "evil": OpensAFile(str(proof))}
    body = pickle.dumps(((run_id, 1), {}, embed))
    since = len(services.worker.output())
    publish(services.redis_url, body, "application/x-python-serialize", "binary",
            "runcast.agent.echo", run_id)
    log = wait_for_log(services.worker, "Refusing to deserialize untrusted content", since)
    assert "pickle" in log
    assert_worker_serves(services)
    assert not proof.exists(), "the worker unpickled the message"
    run = httpx.get(f"{services.url}/runs/{run_id}").json()
    assert run["status"] == "queued" and run["attempt"] == 0 and run["last_seq"] == 0, run
    eventually(lambda: services.redis.llen("default") == 0
               and services.redis.hlen("unacked") == 0, timeout=10,
               what="an empty queue and no unacknowledged message")


def test_unknown_task_names_are_discarded_without_an_import(services):
    since = len(services.worker.output())
    names = ["os.system", "tests.reliability.hostile_sideeffect.run",
             "runcast.agent.tests.reliability.hostile_sideeffect", "runcast.agent.os.system",
             "runcast.agent.__import__"]
    for name in names:
        run_id = queued_run(services.redis)
        body = json.dumps([[run_id, 1], {}, {"callbacks": None, "errbacks": None,
                                             "chain": None, "chord": None}]).encode()
        publish(services.redis_url, body, "application/json", "utf-8", name, run_id)
        wait_for_log(services.worker, run_id, since)
        assert httpx.get(f"{services.url}/runs/{run_id}").json()["status"] == "queued"
    log = services.worker.output()[since:]
    assert log.count("Received unregistered task") >= len(names), log[-3000:]
    assert not services.marker.exists()


def test_agent_names_from_requests_never_import_a_module(services, http):
    known = {agent["name"] for agent in http.get("/agents").json()["agents"]}
    assert {"echo", "h_big_event"} <= known
    names = ["os.system", "tasks.demo.echo", "__import__", "tests.reliability.hostile_sideeffect",
             "tests.reliability.hostile_sideeffect:run", "tests/reliability/hostile_sideeffect",
             "tests.reliability.hostile_sideeffect.run", "runcast.agent.echo", "builtins.eval",
             "subprocess.run", "../echo", "echo\u0000", " echo", "ECHO", "tasks.demo",
             "celery.app.task.Task", "importlib.import_module"]
    for name in names:
        assert_clear_4xx(http.post("/runs", json={"agent": name, "input": {}}), 404)
        assert_clear_4xx(http.post("/runs/stream", json={"agent": name}), 404)
        assert_clear_4xx(http.post("/batches", json={"runs": [{"agent": name}]}), 404)
        assert http.get("/runs", params={"agent": name}).json()["runs"] == []
    assert {agent["name"] for agent in http.get("/agents").json()["agents"]} == known
    assert not services.marker.exists(), services.marker.read_text()
