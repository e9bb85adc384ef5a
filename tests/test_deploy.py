"""The deployment files: compose and Procfile agree; the Procfile's processes work for real."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml

from tests.install_support import (
    BUILD_WHEEL,
    DOCKER_WHEEL_DIR,
    INSTALL_WHEEL,
    dockerfile_instructions,
    dockerfile_pip_commands,
    fill,
)
from tests.redis_server import free_port
from tests.services import ROOT, Process, service_env, wait_http

BIN = Path(sys.executable).parent
PORT_VALUE = re.compile(r"\$\{PORT:-\d+\}|\$PORT|\b(8000|5555)\b")
AUTH_VALUE = re.compile(r"--basic-auth=\S+")


def procfile() -> dict[str, str]:
    entries = {}
    for line in (ROOT / "Procfile").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, command = line.partition(":")
            entries[name.strip()] = command.strip()
    return entries


def normalised(command: str | list[str]) -> list[str]:
    text = command if isinstance(command, str) else shlex.join(command)
    text = AUTH_VALUE.sub("--basic-auth=AUTH", PORT_VALUE.sub("PORT", text))
    return shlex.split(text)


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_compose_has_the_services_of_the_design(compose):
    assert set(compose["services"]) == {"redis", "api", "worker", "flower"}


def test_compose_commands_agree_with_the_procfile(compose):
    procs = procfile()
    services = compose["services"]
    assert normalised(services["api"]["command"]) == normalised(procs["web"])
    assert normalised(services["worker"]["command"]) == normalised(procs["worker"])
    assert normalised(services["flower"]["command"]) == normalised(procs["flower"])
    assert "-E" in normalised(procs["worker"])  # task events for Flower


def test_compose_keeps_redis_private_and_never_evicting(compose):
    redis_service = compose["services"]["redis"]
    assert "ports" not in redis_service, "Redis must not be published to the host"
    assert "noeviction" in " ".join(redis_service["command"])
    for name in ("api", "worker", "flower"):
        assert compose["services"][name]["environment"]["REDIS_URL"].startswith("redis://redis:")


def test_compose_worker_scales_and_flower_needs_auth(compose):
    worker = compose["services"]["worker"]
    assert "ports" not in worker and "container_name" not in worker  # --scale worker=N works
    assert "--basic-auth=${FLOWER_BASIC_AUTH" in compose["services"]["flower"]["command"]


def test_dockerfile_installs_the_three_packages():
    dockerfile = (ROOT / "Dockerfile").read_text()
    for package in ("streaming", "tasks", "api"):
        assert f"COPY {package} ./{package}" in dockerfile
    assert "USER runcast" in dockerfile


def test_dockerfile_installs_as_the_smoke_test_does():
    # tests/test_install.py builds and installs with these very commands (no extras)
    assert dockerfile_pip_commands() == [fill(BUILD_WHEEL, DOCKER_WHEEL_DIR),
                                         fill(INSTALL_WHEEL, DOCKER_WHEEL_DIR)]
    # the image holds the installed package only: the source stays in the build stage
    final_stage = (ROOT / "Dockerfile").read_text().rsplit("\nFROM ", 1)[1]
    copies = [args for args in dockerfile_instructions("COPY") if " ".join(args) in final_stage]
    assert copies == [["--from=wheel", DOCKER_WHEEL_DIR, DOCKER_WHEEL_DIR]]


@pytest.mark.slow
def test_procfile_processes_serve_a_followed_run_seen_by_flower(redis_url, tmp_path):
    base = free_port()
    env = service_env(redis_url, FLOWER_BASIC_AUTH="ops:secret-pass")
    env["PATH"] = f"{BIN}:{env.get('PATH', '')}"
    honcho = Process([str(BIN / "honcho"), "-f", str(ROOT / "Procfile"), "start", "-p",
                      str(base)], env, "honcho").start()
    try:
        web, flower = f"http://127.0.0.1:{base}", f"http://127.0.0.1:{base + 200}"
        wait_http(web + "/healthz", honcho, timeout=60)
        wait_http(flower + "/healthcheck", honcho, timeout=60)
        honcho.wait_for_output(" ready.", timeout=60)
        result = subprocess.run(
            [str(BIN / "runcast"), "submit", "countdown", "--input",
             json.dumps({"steps": 2, "delay": 0.05}), "--follow"],
            env={**env, "RUNCAST_URL": web}, capture_output=True, text=True, timeout=60,
            check=False,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        run_id = httpx.get(web + "/runs?agent=countdown&limit=1").json()["runs"][0]["run_id"]
        auth = ("ops", "secret-pass")
        assert httpx.get(flower + "/api/tasks", timeout=5).status_code == 401
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            tasks = httpx.get(flower + "/api/tasks", auth=auth, timeout=5).json()
            if tasks.get(run_id, {}).get("state") == "SUCCESS":
                break
            time.sleep(0.3)
        assert tasks[run_id]["name"] == "runcast.agent.countdown"
        assert tasks[run_id]["state"] == "SUCCESS"
    finally:
        honcho.stop()
