"""Helpers of the web UI tests: headless Chromium (Debian's, through its chromedriver) driven by
Selenium, waits that save a screenshot and name it when they fail, and an API that restarts on
its own port.
"""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.redis_server import free_port
from tests.services import BIN, Process, service_env, wait_http

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
# Headless, and quiet: without the background-networking flags Chromium calls outside hosts
# (component updates, sync, field trials); the tests must reach loopback only.
CHROMIUM_FLAGS = [
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-default-apps", "--disable-extensions", "--disable-dev-shm-usage",
    "--no-default-browser-check", "--metrics-recording-only", "--mute-audio",
]
LAPTOP = (1280, 900)
PHONE = (390, 844)


def start_chromium(profile_dir: str) -> Any:
    """One headless Chromium with a fresh profile; fails (not skips) without Debian's packages."""
    for binary in (CHROMIUM, CHROMEDRIVER):
        if not os.access(binary, os.X_OK):
            pytest.fail(f"{binary} is missing: `make chromium` (or `make test`) installs "
                        "Debian's chromium and chromium-driver")
    os.environ.setdefault("SE_OFFLINE", "true")  # Selenium Manager must not download anything
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in [*CHROMIUM_FLAGS, f"--user-data-dir={profile_dir}",
                 f"--window-size={LAPTOP[0]},{LAPTOP[1]}"]:
        options.add_argument(flag)
    service = Service(executable_path=CHROMEDRIVER,
                      log_output=os.path.join(profile_dir, "chromedriver.log"))
    driver = webdriver.Chrome(service=service, options=options)
    driver.set_page_load_timeout(30)
    return driver


def chromium_session():
    """One Chromium with a fresh profile, removed after: a module fixture's body."""
    profile = tempfile.mkdtemp(prefix="runcast-chromium-")
    driver = start_chromium(profile)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


class Page:
    """The module's browser seen from one test: screenshots go to the test's tmp_path."""

    def __init__(self, driver: Any, shots: Path) -> None:
        self.driver, self.shots, self.count = driver, shots, 0

    def open(self, url: str) -> Page:
        self.driver.get(url)
        return self

    def shot(self, name: str) -> Path:
        self.count += 1
        path = self.shots / f"{self.count:02d}-{name}.png"
        self.driver.save_screenshot(str(path))
        return path

    def js(self, script: str, *args: Any) -> Any:
        return self.driver.execute_script(script, *args)

    def testid(self, name: str) -> Any:
        return self.driver.find_element("css selector", f'[data-testid="{name}"]')

    def all(self, css: str) -> list[Any]:
        return self.driver.find_elements("css selector", css)

    def text(self, name: str) -> str:
        """textContent of the hook (visible or not), or "" when it is not on the page."""
        return self.js(f'const n = document.querySelector(\'[data-testid="{name}"]\');'
                       ' return n ? n.textContent : "";')

    def attr(self, name: str, attribute: str) -> str | None:
        return self.js(f'const n = document.querySelector(\'[data-testid="{name}"]\');'
                       ' return n ? n.getAttribute(arguments[0]) : null;', attribute)

    def event_seqs(self) -> list[int]:
        return self.js('return [...document.querySelectorAll(\'[data-testid="run-events"] > *\')]'
                       '.map(n => Number(n.getAttribute("data-seq")));')

    def rows(self, table: str = "runs-table") -> list[dict[str, Any]]:
        """The table's run rows, read at once (rows are re-rendered while the page is live)."""
        return self.js(f'return [...document.querySelectorAll(\'[data-testid="{table}"] '
                       '[data-run-id]\')].map(r => ({id: r.getAttribute("data-run-id"), '
                       'status: r.getAttribute("data-status"), '
                       'cells: [...r.cells].map(c => c.textContent.trim())}))')

    def console_errors(self) -> list[str]:
        """Errors the browser logged since the last call (a refused request counts too)."""
        return [entry["message"] for entry in self.driver.get_log("browser")
                if entry["level"] == "SEVERE"]

    def check_no_script_errors(self) -> None:
        errors = [e for e in self.console_errors() if "Uncaught" in e]
        self.check(not errors, f"the page's scripts failed: {errors}")

    def fail(self, message: str) -> None:
        path = self.shot("failure")
        raise AssertionError(f"{message}\nscreenshot: {path}\nurl: {self.driver.current_url}"
                             f"\nbrowser errors: {self.console_errors()}")

    def wait(self, check: Callable[[], Any], what: str, timeout: float = 30) -> Any:
        """Poll `check()` until truthy; on timeout, a screenshot whose path is in the message."""
        deadline = time.monotonic() + timeout
        while True:
            value = check()
            if value:
                return value
            if time.monotonic() > deadline:
                self.fail(f"timed out after {timeout} s waiting for {what}")
            time.sleep(0.05)

    def check(self, condition: bool, message: str) -> None:
        if not condition:
            self.fail(message)

    def reset_tab(self, base_url: str) -> None:
        """Forget this origin's session storage (a new tab, as far as the page can tell)."""
        self.driver.get(base_url + "/healthz")
        self.js("sessionStorage.clear(); localStorage.clear();")


def new_page(driver: Any, tmp_path: Path):
    """A page fixture's body: the test's Page, checked for script errors after the test."""
    driver.set_window_size(*LAPTOP)
    page = Page(driver, tmp_path)
    page.console_errors()  # drop what earlier tests left
    yield page
    page.check_no_script_errors()


class RestartableApi:
    """The API under uvicorn on one fixed port, so it can be stopped and started again there."""

    def __init__(self, redis_url: str, log_level: str = "warning", **env: str) -> None:
        self.redis_url, self.env, self.log_level = redis_url, env, log_level
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: Process | None = None
        self.logs: list[Process] = []

    def start(self) -> RestartableApi:
        args = [str(BIN / "uvicorn"), "api.app:app", "--host", "127.0.0.1", "--port",
                str(self.port), "--log-level", self.log_level]
        self.process = Process(args, service_env(self.redis_url, **self.env), "api-ui").start()
        self.logs.append(self.process)
        wait_http(self.url + "/healthz", self.process)
        return self

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if sig == signal.SIGKILL:
            self.process.kill()
        self.process.stop()

    def output(self) -> str:
        return "".join(process.output() for process in self.logs)
