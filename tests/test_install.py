"""What a user installs works: the wheel, installed with no extras into a clean virtualenv,
imports, reports its version and metadata, and its `runcast api`, `celery -A tasks worker` and
`celery -A tasks flower` serve runs against Redis. A missing dependency fails here, by name.

Everything runs from the virtualenv, in a directory outside the clone, without PYTHONPATH: only
the installed package can be imported. The venv is cached (tests/install_support.py).
"""

from __future__ import annotations

import json
import secrets
import time
import tomllib
import zipfile
from urllib.parse import urlsplit, urlunsplit

import httpx
import pytest

from tests.api_helpers import (
    TERMINAL_STATUSES,
    TERMINAL_TYPES,
    read_frames,
    words,
)
from tests.install_support import (
    DEV_ONLY,
    IMPORT_ALL,
    OPTIONAL_MODULES,
    SmokeVenv,
    VenvProcess,
    clean_env,
    explain,
    run,
    smoke_venv,
)
from tests.log_check import check_log
from tests.redis_server import free_port
from tests.services import ROOT, http_client

# The first run on a machine builds the cached venv (resolves and installs every dependency).
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

SMOKE_DB = 13  # a database of the test Redis of its own: the session's worker must not take
# the runs meant for the installed worker
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


@pytest.fixture(scope="module")
def outside(tmp_path_factory):
    """An empty working directory outside the clone."""
    return tmp_path_factory.mktemp("outside-the-clone")


@pytest.fixture(scope="module")
def venv(tmp_path_factory) -> SmokeVenv:
    with smoke_venv(tmp_path_factory.mktemp("smoke-build")) as env:
        print(f"\nsmoke venv {env.path} ({'cold' if env.cold else 'warm'}): "
              f"install {env.install_s:.1f} s")
        yield env


def test_the_wheel_ships_every_file_of_the_packages(venv):
    shipped = set(zipfile.ZipFile(venv.wheel).namelist())
    missing = [
        str(path.relative_to(ROOT))
        for package in ("streaming", "tasks", "api")
        for path in sorted((ROOT / package).rglob("*"))
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc"
        and not path.name.startswith(".")  # editor and OS droppings
        and str(path.relative_to(ROOT)) not in shipped
    ]
    assert not missing, f"files of the source tree missing from the wheel: {missing}"


def test_a_plain_install_has_no_extras(venv, outside):
    result = venv.script(
        "import importlib.metadata as md, json\n"
        f"print(json.dumps([n for n in {list(DEV_ONLY)!r} if n in "
        "{d.metadata['Name'].lower() for d in md.distributions()}]))", outside)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == [], "a plain install must not pull in the extras"


def test_every_module_imports_from_a_plain_install(venv, outside):
    result = venv.script(IMPORT_ALL, outside)
    assert result.returncode == 0, explain("importing the installed modules", result.stderr)
    found = json.loads(result.stdout)
    assert {"api.app", "api.cli", "tasks", "streaming"} <= set(found)
    broken = {name: info["error"] for name, info in found.items()
              if not info["ok"] and name not in OPTIONAL_MODULES}
    assert not broken, "modules that do not import in a plain install (no extras):\n" + "\n".join(
        f"  {name}: {error}" for name, error in broken.items())
    for name, info in found.items():
        if info["ok"]:
            assert info["file"].startswith(str(venv.path)), f"{name} came from {info['file']}"
    for name, extra in OPTIONAL_MODULES.items():
        if name in found:  # it needs its extra: without it, an ImportError that names the extra
            assert not found[name]["ok"], f"{name} imported without {extra}"
            assert found[name]["import_error"] and extra in found[name]["error"], found[name]


def test_runcast_version_and_metadata(venv, outside):
    version = run([venv.bin("runcast"), "--version"], "runcast --version", cwd=outside)
    assert version.strip() == f"runcast {PROJECT['version']}"
    show = run([str(venv.python), "-m", "pip", "show", "runcast"], "pip show", cwd=outside,
               env=clean_env())
    fields = dict(line.split(": ", 1) for line in show.splitlines() if ": " in line)
    assert fields["Version"] == PROJECT["version"]
    assert fields["Summary"] == PROJECT["description"]
    assert fields["Author"] or fields.get("Author-email")
    requires = {name.strip().lower() for name in fields["Requires"].split(",")}
    assert {"celery", "kombu", "redis", "fastapi", "flower", "packaging"} <= requires
    meta = venv.script("import importlib.metadata as md, json\n"
                       "m = md.metadata('runcast')\n"
                       "print(json.dumps({k: m.get_all(k) for k in set(m.keys())}))", outside)
    metadata = json.loads(meta.stdout)
    assert metadata["License-Expression"] == ["MIT"]
    assert metadata["Requires-Python"] == [PROJECT["requires-python"]]
    classifiers = metadata["Classifier"]
    for prefix in ("Programming Language :: Python :: 3.11", "Framework :: ", "Topic :: ",
                   "Intended Audience :: "):
        assert any(c.startswith(prefix) for c in classifiers), (prefix, classifiers)


def test_the_cli_and_the_demo_run_from_a_plain_install(venv, outside):
    assert "Usage: runcast" in run([venv.bin("runcast"), "--help"], "runcast --help", cwd=outside)
    demo = run([venv.bin("runcast"), "demo"], "runcast demo (embedded)", cwd=outside, timeout=180)
    assert "demo finished as expected" in demo, demo[-2000:]


def smoke_redis_url(redis_url: str) -> str:
    parts = urlsplit(redis_url)
    return urlunsplit(parts._replace(path=f"/{SMOKE_DB}"))


def test_installed_commands_serve_runs_streams_and_flower(venv, outside, redis_url):
    env = clean_env(REDIS_URL=smoke_redis_url(redis_url))
    api_port, flower_port = free_port(), free_port()
    auth = ("smoke", secrets.token_hex(8))
    name = f"smoke-{secrets.token_hex(4)}"
    processes = {
        "api": VenvProcess([venv.bin("runcast"), "api", "--host", "127.0.0.1", "--port",
                            str(api_port)], env, "smoke-api", outside),
        "worker": VenvProcess([venv.bin("celery"), "-A", "tasks", "worker", "-E", "-l", "info",
                               "-c", "2", "-n", f"{name}@%h"], env, "smoke-worker", outside),
        "flower": VenvProcess([venv.bin("celery"), "-A", "tasks", "flower",
                               "--address=127.0.0.1", f"--port={flower_port}",
                               f"--basic-auth={auth[0]}:{auth[1]}"], env, "smoke-flower",
                              outside),
    }
    api, flower = f"http://127.0.0.1:{api_port}", f"http://127.0.0.1:{flower_port}"
    try:
        for process in processes.values():
            process.start()
        processes["worker"].wait_until(lambda: " ready." in processes["worker"].output(),
                                       "the worker was ready")
        processes["api"].wait_until(lambda: answers(api + "/healthz"), "/healthz answered")
        processes["flower"].wait_until(lambda: answers(flower + "/healthcheck"),
                                       "/healthcheck answered")
        with http_client(api, timeout=30) as http:
            echo = submit(http, "echo", {"hello": "installed"})
            tokens = submit(http, "tokens", {"text": words(20)})
            echo_log = stream(http, echo, processes)
            tokens_log = stream(http, tokens, processes)
            assert echo_log[-1]["type"] == "complete", echo_log[-1]
            assert echo_log[-1]["data"]["output"] == {"echo": {"hello": "installed"}}
            assert [e["data"]["content"] for e in tokens_log if e["type"] == "token"] == [
                f"w{i} " for i in range(20)]
            for run_id in (echo, tokens):
                assert http.get(f"/runs/{run_id}").json()["status"] == "succeeded"
        assert_flower_saw(flower, auth, {echo: "echo", tokens: "tokens"}, name, processes)
    finally:
        for process in processes.values():
            process.stop()


def answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code < 500
    except httpx.HTTPError:
        return False


def submit(http: httpx.Client, agent: str, payload: dict) -> str:
    response = http.post("/runs", json={"agent": agent, "input": payload})
    assert response.status_code == 202, response.text
    return response.json()["run_id"]


def stream(http: httpx.Client, run_id: str, processes: dict[str, VenvProcess]) -> list[dict]:
    """The run's whole log over SSE (`GET /runs/{id}/stream`), which ends at the terminal event.
    The run is awaited first (bounded), so a worker that never runs it cannot hang the read."""
    logs = "\n".join(explain(name, p.output(), 1500) for name, p in processes.items())
    waited = http.get(f"/runs/{run_id}/wait", params={"timeout": 60}, timeout=90).json()
    assert waited["status"] in TERMINAL_STATUSES, f"run never finished: {waited}\n{logs}"
    with http.stream("GET", f"/runs/{run_id}/stream", timeout=60) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        envelopes = [frame.data for frame in read_frames(response)]
    assert envelopes and envelopes[-1]["type"] in TERMINAL_TYPES, logs
    check_log(run_id, envelopes)
    return envelopes


def assert_flower_saw(flower: str, auth: tuple[str, str], runs: dict[str, str], worker: str,
                      processes: dict[str, VenvProcess]) -> None:
    assert httpx.get(flower + "/api/tasks", timeout=10).status_code == 401
    deadline = time.monotonic() + 30
    while True:
        tasks = httpx.get(flower + "/api/tasks", auth=auth, timeout=10).json()
        states = {run_id: tasks.get(run_id, {}).get("state") for run_id in runs}
        if all(state == "SUCCESS" for state in states.values()):
            break
        assert time.monotonic() < deadline, explain(
            f"Flower never showed both runs succeeded: {states}", processes["flower"].output())
        time.sleep(0.3)
    for run_id, agent in runs.items():
        assert tasks[run_id]["name"] == f"runcast.agent.{agent}"
    workers = httpx.get(flower + "/api/workers", params={"refresh": 1}, auth=auth, timeout=30)
    assert workers.status_code == 200, workers.text
    assert any(key.startswith(worker + "@") for key in workers.json()), workers.json().keys()
