"""Webhook URLs refused at submit (422), and the secret's rules.

Loopback only, even if the code under test were wrong: these tests run the API alone on a
private redis-server that no worker consumes, and every run they submit is a long `block` run
that is never cancelled, so a run wrongly accepted can never end and never be delivered.
"""

from __future__ import annotations

import httpx
import pytest

from tests.redis_server import RedisServer
from tests.services import BIN, Process, free_port, http_client, service_env, start_api
from tests.webhook_support import SECRET

NEVER_ENDS = {"agent": "block", "input": {"seconds": 3600}, "timeout": 3600}

REFUSED = {
    "http://127.0.0.1/hook": "loopback",
    "http://127.0.0.1:8080/hook": "loopback",
    "http://10.0.0.1/hook": "private",
    "http://192.168.1.10/hook": "private",
    "http://169.254.169.254/latest/meta-data/": "link-local",
    "http://[::1]/hook": "loopback",
    "http://[::ffff:127.0.0.1]/hook": "loopback",
    "http://[fe80::1]/hook": "link-local",
    "http://0.0.0.0/hook": "unspecified",
    "http://localhost/hook": "loopback",  # a host name that resolves to loopback
    "http://2130706433/hook": "loopback",  # 127.0.0.1 written as one number
    "file:///etc/passwd": "http or https",
    "ftp://127.0.0.1/hook": "http or https",
    "gopher://127.0.0.1/hook": "http or https",
    "http:///hook": "no host",
    "http://user:pw@127.0.0.1/hook": "credentials",
}


@pytest.fixture(scope="module")
def server():
    redis_server = RedisServer().start()
    yield redis_server
    redis_server.cleanup()


@pytest.fixture(scope="module")
def strict(server):
    """The API with webhooks on and the default rules (no private addresses); no worker."""
    process, url = start_api(server.url, RUNCAST_WEBHOOK_SECRET=SECRET)
    with http_client(url, timeout=30) as http:
        yield http
    process.stop()


def assert_nothing_stored(http: httpx.Client) -> None:
    response = http.get("/runs")
    assert response.status_code == 200
    assert response.json()["runs"] == []


@pytest.mark.parametrize("url", list(REFUSED))
def test_refused_at_submit(strict, url):
    response = strict.post("/runs", json={**NEVER_ENDS, "webhook": url})
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert isinstance(detail, str) and "webhook" in detail
    assert REFUSED[url] in detail, detail
    assert_nothing_stored(strict)


@pytest.mark.parametrize("url", ["http://10.0.0.1/hook", "http://localhost/hook",
                                 "file:///etc/passwd"])
def test_refused_on_every_submit_route(strict, url):
    response = strict.post("/runs/stream", json={**NEVER_ENDS, "webhook": url})
    assert response.status_code == 422, response.text
    assert "webhook" in response.json()["detail"]
    batch = strict.post("/batches", json={"runs": [NEVER_ENDS], "webhook": url})
    assert batch.status_code == 422, batch.text
    assert "webhook" in batch.json()["detail"]
    per_run = strict.post("/batches", json={"runs": [NEVER_ENDS, {**NEVER_ENDS, "webhook": url}]})
    assert per_run.status_code == 422, per_run.text
    assert per_run.json()["detail"].startswith("runs[1]: webhook")
    assert_nothing_stored(strict)


def test_a_non_string_webhook_is_a_422(strict):
    response = strict.post("/runs", json={**NEVER_ENDS, "webhook": {"url": "x"}})
    assert response.status_code == 422
    response = strict.post("/runs", json={**NEVER_ENDS, "webhook": "http://x/" + "a" * 3000})
    assert response.status_code == 422
    assert_nothing_stored(strict)


def test_refused_while_the_secret_is_unset(server):
    """Private addresses allowed, loopback URL: only the missing secret can refuse it."""
    process, url = start_api(server.url, RUNCAST_WEBHOOK_ALLOW_PRIVATE="true")
    try:
        with http_client(url, timeout=30) as http:
            response = http.post("/runs", json={**NEVER_ENDS,
                                                "webhook": "http://127.0.0.1:9/hook"})
            assert response.status_code == 422, response.text
            assert "RUNCAST_WEBHOOK_SECRET" in response.json()["detail"]
            assert_nothing_stored(http)
            # without a webhook, runs are taken as ever (this one stays queued: no worker)
            accepted = http.post("/runs", json=NEVER_ENDS)
            assert accepted.status_code == 202
            assert accepted.json()["webhook"] is None
            assert accepted.json()["webhook_status"] is None
    finally:
        process.stop()


@pytest.mark.parametrize("secret", ["not-a-secret", "whsec_", "whsec_%%%not-base64%%%"])
def test_a_malformed_secret_stops_the_api_at_start(server, secret):
    env = service_env(server.url, RUNCAST_WEBHOOK_SECRET=secret)
    args = [str(BIN / "uvicorn"), "api.app:app", "--host", "127.0.0.1", "--port",
            str(free_port())]
    process = Process(args, env, "api-bad-secret").start()
    try:
        assert process.proc.wait(timeout=60) != 0
        output = process.output()
        assert "RUNCAST_WEBHOOK_SECRET is malformed" in output, output[-2000:]
        assert "whsec_<base64" in output
        if len(secret) > len("whsec_"):
            assert secret not in output  # a secret stays out of logs
    finally:
        process.stop()
