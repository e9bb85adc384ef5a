"""The pure parts of webhooks: signing (checked by `standardwebhooks`), the retry schedule, the
address rules, the secret's form. Delivery itself is tested for real in test_webhooks.py."""

from __future__ import annotations

import base64
import ipaddress
import time

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from tasks.settings import Settings
from tasks.webhook_secret import decode_webhook_secret
from tasks.webhook_urls import address_problem, check_webhook_url
from tasks.webhooks import (
    Attempt,
    after_attempt,
    new_message,
    retry_pause_s,
    signed_headers,
)
from tests.webhook_support import SECRET

KEY = base64.b64decode(SECRET.removeprefix("whsec_"))


def message():
    return new_message("https://example.com/hook", "run.succeeded", "2026-12-02T00:00:00Z",
                       {"run_id": "r1", "text": "héllo ✓"})


def test_signature_verifies_with_standardwebhooks():
    msg = message()
    headers = signed_headers(KEY, msg, int(time.time()))
    assert Webhook(SECRET).verify(msg.body.encode(), headers) == {
        "type": "run.succeeded", "timestamp": "2026-12-02T00:00:00Z",
        "data": {"run_id": "r1", "text": "héllo ✓"}}
    with pytest.raises(WebhookVerificationError):
        Webhook(SECRET).verify(msg.body.replace("r1", "r2").encode(), headers)
    other = "whsec_" + base64.b64encode(b"another key of thirty-two bytes!").decode()
    with pytest.raises(WebhookVerificationError):
        Webhook(other).verify(msg.body.encode(), headers)


def test_each_attempt_is_signed_with_its_own_timestamp():
    msg = message()
    old = signed_headers(KEY, msg, int(time.time()) - 3600)
    with pytest.raises(WebhookVerificationError):  # a replay an hour late is refused
        Webhook(SECRET).verify(msg.body.encode(), old)
    new = signed_headers(KEY, msg, int(time.time()))
    assert new["webhook-id"] == old["webhook-id"] == msg.id
    assert new["webhook-signature"] != old["webhook-signature"]


def test_retry_pauses_grow_to_hourly():
    assert [retry_pause_s(n) for n in range(1, 9)] == [5, 30, 120, 600, 3600, 3600, 3600, 3600]
    assert retry_pause_s(2, scale=0.01) == pytest.approx(0.3)


def test_after_attempt():
    msg = message()
    status, pause = after_attempt(msg, Attempt(status_code=500), 8, 1.0)
    assert status == {"state": "pending", "attempts": 1, "last_status": 500,
                      "last_error": "the receiver answered HTTP 500"}
    assert pause == 5
    msg = msg.with_status(status)
    status, pause = after_attempt(msg, Attempt(error="no answer within 10 s"), 8, 1.0)
    assert status["attempts"] == 2 and status["last_status"] is None and pause == 30
    status, pause = after_attempt(msg.with_status(status), Attempt(status_code=204), 8, 1.0)
    assert status == {"state": "delivered", "attempts": 3, "last_status": 204,
                      "last_error": None}
    assert pause is None
    status, pause = after_attempt(message(), Attempt(status_code=410), 8, 1.0)
    assert status["state"] == "failed" and status["attempts"] == 1 and pause is None
    status, pause = after_attempt(message(), Attempt(status_code=302), 1, 1.0)  # no redirects
    assert status["state"] == "failed" and status["last_status"] == 302 and pause is None


@pytest.mark.parametrize("address", [
    "127.0.0.1", "10.1.2.3", "172.16.0.1", "192.168.0.1", "169.254.169.254", "100.64.0.1",
    "0.0.0.0", "224.0.0.1", "240.0.0.1", "255.255.255.255", "::1", "::", "fe80::1", "fc00::1",
    "ff02::1", "::ffff:10.0.0.1", "::ffff:127.0.0.1", "64:ff9b::a9fe:a9fe", "2002:7f00:1::",
    "2001:db8::1",
])
def test_non_public_addresses_are_refused(address):
    assert address_problem(ipaddress.ip_address(address)) is not None


@pytest.mark.parametrize("address", ["93.184.215.14", "8.8.8.8", "2606:4700::1111",
                                     "::ffff:8.8.8.8"])
def test_public_addresses_pass(address):
    assert address_problem(ipaddress.ip_address(address)) is None


def test_a_checked_url_is_pinned_to_the_address_checked():
    target = check_webhook_url("http://localhost:8123/a/b?c=d", allow_private=True)
    assert ipaddress.ip_address(target.address).is_loopback
    assert target.pinned_url.host == target.address  # connected to without a new lookup
    assert target.pinned_url.path == "/a/b" and target.pinned_url.query == b"c=d"
    assert target.host_header == "localhost:8123"
    assert target.server_name == "localhost"


def test_secret_form():
    assert decode_webhook_secret(SECRET) == KEY
    assert decode_webhook_secret(SECRET.rstrip("=")) == KEY  # unpadded base64 is fine
    for bad in ("plain", "whsec_", "whsec_***", KEY.hex()):
        with pytest.raises(ValueError, match="RUNCAST_WEBHOOK_SECRET is malformed"):
            decode_webhook_secret(bad)
    assert Settings(webhook_secret=SECRET).webhook_key == KEY
    assert Settings(webhook_secret="").webhook_key is None
    assert Settings().webhook_max_attempts == 8 and Settings().webhook_timeout == 10
    assert Settings().webhook_allow_private is False
