"""The web UI (DESIGN.md, "Web UI") in a real headless Chromium against the real API (uvicorn),
a Celery worker and Redis. One browser for the module; screenshots under each test's tmp_path.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time

import httpx
import pytest

from tests.api_helpers import all_events, submit, wait_terminal
from tests.services import ROOT, http_client, service_env, start_worker
from tests.ui_support import PHONE, Page, RestartableApi, chromium_session, new_page

UI_AGENTS = "tasks.demo,tests.agents_ui"


@pytest.fixture(scope="module")
def chromium():
    yield from chromium_session()


@pytest.fixture
def page(chromium, tmp_path):
    yield from new_page(chromium, tmp_path)


@pytest.fixture(scope="module")
def api(redis_url, runcast):
    """This module's API on a fixed port (the restart test restarts it there) and a worker that
    also runs the `ui_story` agent."""
    import tests.agents_ui  # noqa: F401 - registered in this process too

    worker = start_worker(redis_url, name="ui", concurrency=3, extra_args=["-Q", "default,ui"],
                          RUNCAST_AGENTS=UI_AGENTS)
    service = RestartableApi(redis_url, RUNCAST_AGENTS=UI_AGENTS).start()
    yield service
    service.stop()
    worker.stop()


@pytest.fixture(scope="module")
def http(api):
    with http_client(api.url) as client:
        yield client


def run_page(page: Page, api: RestartableApi, run_id: str) -> Page:
    return page.open(f"{api.url}/ui/runs/{run_id}")


def status_is(page: Page, status: str):
    return lambda: page.text("run-status") == status


def assert_complete_log_shown(page: Page, http: httpx.Client, run_id: str) -> None:
    """run-events holds one child per event of the log, in seq order, each exactly once."""
    last_seq = http.get(f"/runs/{run_id}").json()["last_seq"]
    expected = list(range(1, last_seq + 1))
    page.wait(lambda: page.event_seqs() == expected,
              f"run-events seqs {expected}", timeout=15)


def test_tokens_text_grows_to_the_full_sentence(page, api, http):
    sentence = " ".join(f"word{i}" for i in range(24))
    run = submit(http, "tokens", {"text": sentence, "delay": 0.12})
    run_page(page, api, run["run_id"])
    lengths = set()

    def grown():
        text = page.text("run-tokens")
        lengths.add(len(text))
        return text.strip() == sentence

    page.wait(grown, "the whole sentence in run-tokens")
    page.shot("tokens")
    partial = {n for n in lengths if 0 < n < len(sentence)}
    page.check(len(partial) >= 2, f"the text did not grow word by word: lengths seen {lengths}")
    page.wait(status_is(page, "succeeded"), "status succeeded")
    page.check(sentence in page.text("run-output"), "the output shows the returned text")
    page.check(page.text("run-error") == "", "no error on a succeeded run")
    assert_complete_log_shown(page, http, run["run_id"])


def test_countdown_progress_reaches_one(page, api, http):
    run = submit(http, "countdown", {"steps": 6, "delay": 0.3})
    run_page(page, api, run["run_id"])
    values = set()

    def full():
        value = float(page.attr("run-progress", "value") or 0)
        values.add(value)
        return value == 1

    page.wait(full, "run-progress value 1")
    page.shot("countdown")
    page.check(any(0 < v < 1 for v in values), f"no progress between 0 and 1 seen: {values}")
    page.wait(status_is(page, "succeeded"), "status succeeded")
    assert_complete_log_shown(page, http, run["run_id"])


def test_a_failing_run_shows_its_error(page, api, http):
    run = submit(http, "fail", {"message": "the model said no"})
    run_page(page, api, run["run_id"])
    page.wait(status_is(page, "failed"), "status failed")
    page.wait(lambda: "the model said no" in page.text("run-error"), "the error message")
    page.shot("failed")
    page.check("agent_error" in page.text("run-error"), "the error code is shown")
    page.check(page.testid("run-error").is_displayed(), "the error is visible")
    page.check(page.text("run-output") == "", "no output on a failed run")


def test_the_cancel_button_cancels_a_sleeping_run(page, api, http):
    run = submit(http, "sleep", {"seconds": 60})
    run_page(page, api, run["run_id"])
    page.wait(status_is(page, "running"), "status running")
    button = page.testid("cancel-button")
    page.check(button.is_enabled() and button.accessible_name == "Cancel this run",
               f"an enabled, named cancel button (name {button.accessible_name!r})")
    button.click()
    page.wait(status_is(page, "cancelled"), "status cancelled after the click", timeout=20)
    page.shot("cancelled")
    assert wait_terminal(http, run["run_id"])["status"] == "cancelled"
    page.check(not page.testid("cancel-button").is_enabled(), "cancel is disabled once ended")
    assert_complete_log_shown(page, http, run["run_id"])


def test_update_line_is_transient_and_custom_events_show(page, api, http):
    run = submit(http, "ui_story", {"pause": 0.6})
    run_page(page, api, run["run_id"])
    page.wait(lambda: page.text("run-update") == "Searching the archive", "the first update")
    page.shot("update")
    # custom:ui_found_thing is a type the page has no listener for: it comes from the log
    page.wait(lambda: "ui_found_thing" in page.text("run-events"), "the custom event in the log")
    page.wait(lambda: page.text("run-update") == "", "the update line cleared by new content")
    page.wait(lambda: page.text("run-update") == "Writing the answer", "the second update")
    page.wait(status_is(page, "succeeded"), "status succeeded")
    page.check(page.text("run-update") == "", "the update line cleared at the end")
    page.check(page.text("run-tokens") == "Found it. Done.", page.text("run-tokens"))
    custom = page.js("return document.getElementById('run-custom').textContent")
    page.check("ui_found_thing" in custom and "doc-7" in custom, f"custom events: {custom!r}")
    assert_complete_log_shown(page, http, run["run_id"])
    page.shot("story-done")


def test_a_page_opened_after_the_run_ended_shows_the_complete_log(page, api, http):
    run = submit(http, "custom", {"document_id": "doc-9"})
    wait_terminal(http, run["run_id"])
    run_page(page, api, run["run_id"])
    assert_complete_log_shown(page, http, run["run_id"])
    page.wait(status_is(page, "succeeded"), "status succeeded")
    page.shot("ended")
    kinds = page.js('return [...document.querySelectorAll(\'[data-testid="run-events"] > *\')]'
                    '.map(n => n.getAttribute("data-type"))')
    assert kinds == [e["type"] for e in all_events(http, run["run_id"])]
    page.check('"answer": "done"' in page.text("run-output"), page.text("run-output"))


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["graceful", "killed"])
def test_the_page_survives_an_api_restart_mid_run(page, api, http, sig):
    sentence = " ".join(f"t{i}" for i in range(60))
    run = submit(http, "tokens", {"text": sentence, "delay": 0.1})
    run_page(page, api, run["run_id"])
    page.wait(lambda: len(page.event_seqs()) >= 8, "some events before the restart")
    api.stop(sig)
    shown_while_down = len(page.event_seqs())
    time.sleep(0.5)
    api.start()
    page.wait(status_is(page, "succeeded"), "status succeeded after the restart", timeout=40)
    page.shot("after-restart")
    last_seq = http.get(f"/runs/{run['run_id']}").json()["last_seq"]
    page.check(shown_while_down < last_seq, "the restart happened mid-run")
    seqs = page.event_seqs()
    page.check(seqs == list(range(1, last_seq + 1)),
               f"every event exactly once, in order: {seqs} (last_seq {last_seq})")
    page.check(page.text("run-tokens").strip() == sentence, page.text("run-tokens"))


def test_runs_list_filters_and_updates_live(page, api, http):
    done = submit(http, "echo", {"n": 1})
    failed = submit(http, "fail", {"message": "listed"})
    wait_terminal(http, done["run_id"])
    wait_terminal(http, failed["run_id"])
    page.open(f"{api.url}/ui")

    def row_status(run_id):
        return next((r["status"] for r in page.rows() if r["id"] == run_id), None)

    page.wait(lambda: row_status(done["run_id"]) == "succeeded", "the echo run's row")
    page.check(row_status(failed["run_id"]) == "failed", "the failed run's row")
    ids = [r["id"] for r in page.rows()]
    listed = [r["run_id"] for r in http.get("/runs", params={"limit": len(ids)}).json()["runs"]]
    page.check(ids[:2] == listed[:2] and ids.index(failed["run_id"]) < ids.index(done["run_id"]),
               f"newest first: {ids[:3]}")
    # live: a run submitted now appears, and its status changes, without a reload
    sleeper = submit(http, "sleep", {"seconds": 30})
    page.wait(lambda: row_status(sleeper["run_id"]) in ("queued", "running"), "the new run")
    http.post(f"/runs/{sleeper['run_id']}/cancel", json={"reason": "test"})
    page.wait(lambda: row_status(sleeper["run_id"]) == "cancelled", "its status change")
    page.shot("runs")
    # filters: by status, then by agent, each a labelled control
    from selenium.webdriver.support.ui import Select

    status_filter = page.testid("filter-status")
    page.check(status_filter.accessible_name == "Filter by status", status_filter.accessible_name)
    Select(status_filter).select_by_visible_text("failed")
    page.wait(lambda: {r["status"] for r in page.rows()} == {"failed"}, "only failed rows")
    page.check(row_status(failed["run_id"]) == "failed", "the failed run is still listed")
    page.check("status=failed" in page.driver.current_url, "the filter is kept in the URL")
    Select(status_filter).select_by_visible_text("all")
    Select(page.testid("filter-agent")).select_by_visible_text("echo")
    page.wait(lambda: row_status(done["run_id"]) == "succeeded"
              and {r["cells"][1] for r in page.rows()} == {"echo"}, "only echo rows")
    page.shot("runs-filtered")


def test_batch_page_reaches_its_total(page, api, http):
    runs = [{"agent": "countdown", "input": {"steps": 4, "delay": 0.25}} for _ in range(9)]
    created = http.post("/batches", json={"runs": runs}).json()
    batch_id, total = created["batch_id"], created["total"]
    page.open(f"{api.url}/ui/batches/{batch_id}")
    values = set()

    def complete():
        value = float(page.attr("batch-progress", "value") or 0)
        values.add(value)
        return value == 1

    page.wait(complete, "batch-progress value 1", timeout=45)
    page.wait(lambda: page.attr("batch-counts", "data-total") == str(total), "the total")
    page.wait(lambda: page.js('return document.querySelector(\'[data-testid="batch-counts"] '
                              '[data-status="succeeded"]\')?.getAttribute("data-count")')
              == str(total), f"{total} succeeded in batch-counts")
    page.check(re.search(rf"succeeded\s*{total}", page.text("batch-counts")) is not None,
               page.text("batch-counts"))

    def rows():
        return page.js('return [...document.querySelectorAll(\'[data-testid="batch-runs"] '
                       '[data-run-id]\')].map(r => [r.dataset.runId, r.dataset.status])')

    page.wait(lambda: len(rows()) == total and {s for _, s in rows()} == {"succeeded"},
              "its runs, all succeeded")
    page.check({r for r, _ in rows()} == set(created["run_ids"]), "the batch's own runs")
    page.shot("batch")
    assert http.get(f"/batches/{batch_id}").json()["done"] is True
    # live from the batch stream where the server has it, else by polling GET /batches/{id}
    has_stream = http.get(f"/batches/{batch_id}/stream").status_code == 200
    mode = page.js("return document.getElementById('batch-mode').dataset.mode")
    page.check(mode == ("stream" if has_stream else "polling"), f"batch page mode {mode!r}")


def test_pages_fit_a_phone_and_load_nothing_from_another_host(page, api, http):
    run = submit(http, "tokens", {"text": "a narrow screen still reads well " * 6})
    wait_terminal(http, run["run_id"])
    page.driver.set_window_size(*PHONE)
    for path in ("/ui", f"/ui/runs/{run['run_id']}"):
        page.open(api.url + path)
        if path == "/ui":
            page.wait(page.rows, "rows")
        else:
            page.wait(status_is(page, "succeeded"), "status succeeded")
        shot = page.shot("phone" + path.replace("/", "-"))
        overflow = page.js("return document.documentElement.scrollWidth - "
                           "document.documentElement.clientWidth")
        page.check(overflow <= 0, f"{path} scrolls sideways by {overflow}px on a phone ({shot})")
        hosts = page.js("return [location.href, ...performance.getEntriesByType('resource')"
                        ".map(e => e.name)].map(u => new URL(u).origin)")
        page.check(set(hosts) == {api.url}, f"{path} loaded from other origins: {set(hosts)}")
    unnamed = page.js("return [...document.querySelectorAll('button, select, input, progress')]"
                      ".filter(n => !(n.getAttribute('aria-label') || n.labels?.length))"
                      ".map(n => n.outerHTML)")
    page.check(unnamed == [], f"controls without an accessible name: {unnamed}")


def test_pages_are_static_shells_with_a_strict_policy(http):
    for path in ("/ui", "/ui/runs/abc", "/ui/batches/abc", "/ui/static/run.js",
                 "/ui/static/ui.css"):
        response = http.get(path)
        assert response.status_code == 200, (path, response.text)
        policy = response.headers["content-security-policy"]
        assert "default-src 'self'" in policy and "connect-src 'self'" in policy
        assert response.headers["referrer-policy"] == "no-referrer"
    assert http.get("/ui/static/nope.js").status_code == 404
    assert http.get("/ui/static/..%2Fapp.py").status_code == 404
    assert http.get("/ui/static/run.html").headers["content-type"].startswith("text/html")
    assert "/ui" not in str(http.get("/openapi.json").json()["paths"])


def test_demo_prints_the_ui_address_and_its_runs_can_be_watched_there(page, tmp_path):
    env = service_env("memory://")
    demo = subprocess.Popen([sys.executable, "-m", "api.cli", "demo", "--keep-open"], cwd=ROOT,
                            env={**env, "COLUMNS": "200"}, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    try:
        for line in demo.stdout:
            lines.append(line)
            if "the service stays up" in line:
                break
        output = "".join(lines)
        found = re.search(r"web UI: (http://127\.0\.0\.1:\d+)/ui", output)
        assert found, output
        url = found.group(1)
        page.open(url + "/ui")
        rows = page.wait(lambda: len(page.rows()) >= 25 and page.rows(),
                         "the demo's 25 runs (5 runs and a batch of 20)")
        statuses = {r["status"] for r in rows}
        page.check(statuses == {"succeeded", "failed", "cancelled"}, str(statuses))
        page.shot("demo")
        # one of them, in embedded mode (events in memory): the token run's page
        tokens_run = next(r["id"] for r in rows if r["cells"][1] == "tokens")
        page.open(f"{url}/ui/runs/{tokens_run}")
        page.wait(lambda: page.text("run-status") == "succeeded", "the demo's token run")
        last_seq = httpx.get(f"{url}/runs/{tokens_run}").json()["last_seq"]
        page.wait(lambda: page.event_seqs() == list(range(1, last_seq + 1)), "its whole log")
        page.check(page.text("run-tokens").startswith("runcast streams every token"),
                   page.text("run-tokens"))
        page.shot("demo-run")
    finally:
        demo.send_signal(signal.SIGINT)
        rest = demo.communicate(timeout=30)[0]
    assert demo.returncode == 0, "".join(lines) + rest


def test_a_long_log_is_shown_whole_without_freezing_the_page(page, api, http):
    run = submit(http, "chatty", {"n": 3000})
    run_page(page, api, run["run_id"])
    began = time.monotonic()
    page.wait(status_is(page, "succeeded"), "status succeeded")
    assert_complete_log_shown(page, http, run["run_id"])
    elapsed = time.monotonic() - began
    page.check(elapsed < 20, f"3,002 events took {elapsed:.1f} s to show")
    page.shot("long-log")
