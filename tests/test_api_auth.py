"""Auth (DESIGN.md, "HTTP API"): API keys on every route but /healthz, and the per-run
stream_token that grants read access to one run. Its own API process, with keys set."""

from __future__ import annotations

import secrets

import httpx
import pytest

from tests.api_helpers import marker, parse_body, wait_terminal
from tests.services import http_client, start_api

KEYS = ("key-one-" + secrets.token_hex(8), "key-two-" + secrets.token_hex(8))


@pytest.fixture(scope="module")
def auth_url(redis_url, worker):
    process, url = start_api(redis_url, RUNCAST_API_KEYS=",".join(KEYS),
                             RUNCAST_SECRET=secrets.token_hex(32))
    yield url
    process.stop()


@pytest.fixture(scope="module")
def admin(auth_url):
    with http_client(auth_url, headers={"Authorization": f"Bearer {KEYS[0]}"}) as client:
        yield client


@pytest.fixture(scope="module")
def anon(auth_url):
    with http_client(auth_url) as client:
        yield client


@pytest.fixture(scope="module")
def runs(admin):
    """Two finished runs, one sleeping run and a batch, made with a key."""
    done = [admin.post("/runs", json={"agent": "tokens", "input": {"text": "a b"}}).json()
            for _ in range(2)]
    for run in done:
        wait_terminal(admin, run["run_id"])
    batch = admin.post("/batches", json={"runs": [{"agent": "echo"}]}).json()
    return {"a": done[0], "b": done[1], "batch": batch}


def routes(runs) -> list[tuple[str, str, dict]]:
    """Every route of the contract's table (but /healthz), with a valid request."""
    run_id, batch_id = runs["a"]["run_id"], runs["batch"]["batch_id"]
    return [
        ("POST", "/runs", {"json": {"agent": "echo"}}),
        ("POST", "/runs/stream", {"json": {"agent": "echo"}}),
        ("GET", f"/runs/{run_id}", {}),
        ("GET", f"/runs/{run_id}/wait", {"params": {"timeout": 1}}),
        ("GET", f"/runs/{run_id}/events", {}),
        ("GET", f"/runs/{run_id}/stream", {}),
        ("POST", f"/runs/{run_id}/cancel", {"json": {"reason": None}}),
        ("GET", "/runs", {}),
        ("POST", "/batches", {"json": {"runs": [{"agent": "echo"}]}}),
        ("GET", f"/batches/{batch_id}", {}),
        ("POST", f"/batches/{batch_id}/cancel", {}),
        ("GET", "/agents", {}),
        ("GET", "/openapi.json", {}),  # FastAPI's schema and docs, like every other route
        ("GET", "/docs", {}),
        ("GET", "/redoc", {}),
    ]


def assert_401(response: httpx.Response) -> None:
    assert response.status_code == 401, (response.request.url, response.text)
    assert response.headers["www-authenticate"].lower().startswith("bearer")
    assert response.json()["detail"]


def test_every_route_but_healthz_needs_a_key(anon, runs):
    for method, path, kwargs in routes(runs):
        assert_401(anon.request(method, path, **kwargs))
    health = anon.get("/healthz")
    assert health.status_code == 200 and health.json()["status"] == "ok"


@pytest.mark.parametrize("header", [
    f"Bearer wrong-{KEYS[0]}",
    f"Bearer {KEYS[0][:-1]}",          # truncated
    f"Bearer {KEYS[0]}x",              # extended
    f"Basic {KEYS[0]}",                # not the Bearer scheme
    f"{KEYS[0]}",                      # no scheme
    "Bearer",
    f"Bearer {KEYS[0]},{KEYS[1]}",     # the whole list is not a key
    f"Bearer {KEYS[0][:-1]}\xe9".encode("latin-1"),  # non-ASCII: a 401, not a 500
])
def test_a_wrong_key_is_401(anon, runs, header):
    for method, path, kwargs in routes(runs):
        assert_401(anon.request(method, path, headers={"Authorization": header}, **kwargs))


@pytest.mark.parametrize("key", KEYS)
def test_a_right_key_passes_on_every_route(auth_url, runs, key):
    with http_client(auth_url, headers={"Authorization": f"Bearer {key}"}) as client:
        for method, path, kwargs in routes(runs):
            if path.endswith("/cancel") and path.startswith("/runs/"):
                expected = {409}  # the run ended: past auth, refused for its state
            else:
                expected = {200, 202}
            response = client.request(method, path, **kwargs)
            assert response.status_code in expected, (method, path, response.text)
        # the scheme is case-insensitive (RFC 7235)
        response = client.get("/agents", headers={"Authorization": f"bearer {key}"})
        assert response.status_code == 200


def test_stream_token_grants_reading_its_run(anon, runs):
    run = runs["a"]
    run_id, token = run["run_id"], run["stream_token"]
    got = anon.get(f"/runs/{run_id}", params={"token": token})
    assert got.status_code == 200 and got.json()["run_id"] == run_id
    assert got.json()["stream_token"] == token
    events = anon.get(f"/runs/{run_id}/events", params={"token": token})
    assert events.status_code == 200 and events.json()["done"] is True
    waited = anon.get(f"/runs/{run_id}/wait", params={"token": token, "timeout": 1})
    assert waited.status_code == 200 and waited.json()["status"] == "succeeded"
    stream = anon.get(f"/runs/{run_id}/stream", params={"token": token})
    assert stream.status_code == 200
    assert stream.headers["content-type"].startswith("text/event-stream")
    assert [f.event for f in parse_body(stream.text)] == ["started", "token", "token",
                                                           "complete"]


def test_stream_token_of_a_running_run_follows_it_live(admin, anon):
    run = admin.post("/runs", json={"agent": "tokens",
                                    "input": {"text": "x y z", "delay": 0.05}}).json()
    with anon.stream("GET", f"/runs/{run['run_id']}/stream",
                     params={"token": run["stream_token"]}) as response:
        assert response.status_code == 200
        frames = parse_body(response.read().decode())
    assert [f.seq for f in frames] == [1, 2, 3, 4, 5]


def test_stream_token_does_not_open_other_runs_or_forgeries(anon, runs):
    a, b = runs["a"], runs["b"]
    token = a["stream_token"]
    bad_tokens = {
        "another run's": b["stream_token"],
        "truncated": token[:-1],
        "half": token[: len(token) // 2],
        "extended": token + "0",
        "forged": secrets.token_hex(len(token) // 2),
        "upper-cased": token.upper() if token.upper() != token else token + "X",
        "empty": "",
        "non-ASCII": token[:-1] + "é",  # compare_digest refuses non-ASCII str: not a 500
    }
    for path in ("", "/events", "/wait", "/stream"):
        for name, bad in bad_tokens.items():
            response = anon.get(f"/runs/{a['run_id']}{path}", params={"token": bad, "timeout": 1})
            assert response.status_code == 401, (path, name, response.text)
            assert response.headers["www-authenticate"].lower().startswith("bearer")
        # a's token opens only a
        assert_401(anon.get(f"/runs/{b['run_id']}{path}", params={"token": token,
                                                                  "timeout": 1}))
    # a forged token for a run that does not exist: 401 too (no probing for run ids)
    assert_401(anon.get(f"/runs/{marker()}", params={"token": secrets.token_hex(20)}))


def test_stream_token_is_no_key_for_writes_or_lists(anon, admin, runs):
    sleeper = admin.post("/runs", json={"agent": "sleep", "input": {"seconds": 30}}).json()
    try:
        token = sleeper["stream_token"]
        assert_401(anon.post(f"/runs/{sleeper['run_id']}/cancel", params={"token": token},
                             json={"reason": None}))
        assert admin.get(f"/runs/{sleeper['run_id']}").json()["cancel_requested"] is False
        assert_401(anon.post("/runs", params={"token": token}, json={"agent": "echo"}))
        assert_401(anon.post("/runs/stream", params={"token": token}, json={"agent": "echo"}))
        assert_401(anon.get("/runs", params={"token": token}))
        assert_401(anon.post("/batches", params={"token": token},
                             json={"runs": [{"agent": "echo"}]}))
        assert_401(anon.get(f"/batches/{runs['batch']['batch_id']}", params={"token": token}))
        assert_401(anon.get("/agents", params={"token": token}))
        # nor as a Bearer key
        assert_401(anon.get(f"/runs/{sleeper['run_id']}",
                            headers={"Authorization": f"Bearer {token}"}))
    finally:
        admin.post(f"/runs/{sleeper['run_id']}/cancel")
    assert wait_terminal(admin, sleeper["run_id"])["status"] == "cancelled"


def test_tokens_differ_per_run_and_are_stable(admin, runs):
    a = runs["a"]
    assert admin.get(f"/runs/{a['run_id']}").json()["stream_token"] == a["stream_token"]
    listed = admin.get("/runs", params={"limit": 100}).json()["runs"]
    tokens = {r["run_id"]: r["stream_token"] for r in listed}
    assert tokens[a["run_id"]] == a["stream_token"]
    assert len(set(tokens.values())) == len(tokens)
