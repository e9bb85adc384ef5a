"""The web UI with RUNCAST_API_KEYS set (DESIGN.md, "Web UI" and "HTTP API" auth): no key, no
data; a key asked once per tab, kept in sessionStorage and sent as a bearer header only;
`?token=<stream_token>` shows one run read-only. The API logs every request (access log on)."""

from __future__ import annotations

import secrets

import pytest

from tests.api_helpers import submit, wait_terminal
from tests.services import http_client
from tests.ui_support import Page, RestartableApi, chromium_session, new_page

KEYS = ("ui-key-one-" + secrets.token_hex(8), "ui-key-two-" + secrets.token_hex(8))


@pytest.fixture(scope="module")
def chromium():
    yield from chromium_session()


@pytest.fixture
def page(chromium, tmp_path):
    yield from new_page(chromium, tmp_path)


@pytest.fixture(scope="module")
def api(redis_url, worker):
    service = RestartableApi(redis_url, log_level="info", RUNCAST_API_KEYS=",".join(KEYS),
                             RUNCAST_SECRET=secrets.token_hex(32)).start()
    yield service
    service.stop()


@pytest.fixture(scope="module")
def admin(api):
    with http_client(api.url, headers={"Authorization": f"Bearer {KEYS[1]}"}) as client:
        yield client


def key_form_shown(page: Page) -> bool:
    return bool(page.all('[data-testid="key-form"]'))


def enter_key(page: Page, key: str) -> None:
    field = page.testid("key-input")
    page.check(field.accessible_name == "API key", f"key field named {field.accessible_name!r}")
    page.check(field.get_attribute("type") == "password", "the key is typed hidden")
    field.clear()
    field.send_keys(key)
    page.driver.find_element("css selector", '[data-testid="key-form"] button').click()


def test_no_key_no_data_then_a_key_once_per_tab(page, api, admin):
    sentence = " ".join(f"k{i}" for i in range(30))
    run = submit(admin, "tokens", {"text": sentence, "delay": 0.1})
    page.reset_tab(api.url)
    page.open(f"{api.url}/ui/runs/{run['run_id']}")
    page.wait(lambda: key_form_shown(page), "the key prompt")
    page.shot("run-no-key")
    page.check(page.text("run-status") == "loading", f"a status without a key: "
                                                     f"{page.text('run-status')!r}")
    page.check(page.event_seqs() == [] and page.text("run-tokens") == "", "data without a key")

    enter_key(page, "not-" + KEYS[0])
    page.wait(lambda: "refused" in page.text("key-form"), "the wrong key refused")
    page.check(page.text("run-events") == "", "data with a wrong key")
    page.shot("run-wrong-key")

    enter_key(page, KEYS[0])
    page.wait(lambda: page.text("run-tokens").strip() == sentence, "the text, with the key",
              timeout=40)
    page.wait(lambda: page.text("run-status") == "succeeded", "status succeeded")
    last_seq = admin.get(f"/runs/{run['run_id']}").json()["last_seq"]
    page.check(page.event_seqs() == list(range(1, last_seq + 1)), str(page.event_seqs()))
    page.check(page.testid("cancel-button").is_displayed(), "a key holder gets the cancel button")
    page.shot("run-with-key")

    storage = page.js("return [sessionStorage.getItem('runcast.apiKey'), localStorage.length,"
                      " document.cookie]")
    page.check(storage == [KEYS[0], 0, ""], f"the key in sessionStorage only: {storage}")
    urls = page.js("return [location.href, ...performance.getEntriesByType('resource')"
                   ".map(e => e.name)]")
    page.check(not any(KEYS[0] in u for u in urls), f"the key in a URL: {urls}")

    # the same tab: the list page does not ask again
    page.open(f"{api.url}/ui")
    page.wait(lambda: any(r["id"] == run["run_id"] for r in page.rows()), "the run listed")
    page.check(not key_form_shown(page), "asked for the key a second time in the same tab")
    page.shot("runs-with-key")

    # cancel with the key, from the page
    sleeper = submit(admin, "sleep", {"seconds": 60})
    page.open(f"{api.url}/ui/runs/{sleeper['run_id']}")
    page.wait(lambda: page.text("run-status") == "running", "the sleeper running")
    page.testid("cancel-button").click()
    page.wait(lambda: page.text("run-status") == "cancelled", "cancelled with the key")
    assert wait_terminal(admin, sleeper["run_id"])["status"] == "cancelled"

    log = api.output()
    assert f"/runs/{run['run_id']}" in log, "the access log is on (else this check means nothing)"
    for key in KEYS:
        assert key not in log, "an API key in the API's log"
        assert key[:12] not in log
    assert "Bearer" not in log and "authorization" not in log.lower()


def test_a_token_link_shows_one_run_read_only(page, api, admin):
    sentence = " ".join(f"r{i}" for i in range(20))
    live = submit(admin, "tokens", {"text": sentence, "delay": 0.1})
    page.reset_tab(api.url)
    page.open(f"{api.url}/ui/runs/{live['run_id']}?token={live['stream_token']}")
    page.wait(lambda: page.text("run-tokens").strip() == sentence, "the text, by token only")
    page.wait(lambda: page.text("run-status") == "succeeded", "status succeeded")
    page.shot("token-link")
    last_seq = admin.get(f"/runs/{live['run_id']}").json()["last_seq"]
    page.check(page.event_seqs() == list(range(1, last_seq + 1)), str(page.event_seqs()))
    page.check(page.all('[data-testid="cancel-button"]') == [], "no cancel button read-only")
    page.check(not key_form_shown(page), "a token link asked for a key")
    page.check(page.js("return sessionStorage.length") == 0, "nothing stored")

    # the token opens that run alone: another run's token is refused, and the page asks for a key
    other = submit(admin, "echo", {})
    page.open(f"{api.url}/ui/runs/{other['run_id']}?token={live['stream_token']}")
    page.wait(lambda: key_form_shown(page), "the key prompt for a token of another run")
    page.check(page.text("run-status") == "loading" and page.event_seqs() == [],
               "data of another run through a token")
    page.shot("token-refused")
