"""Install runcast the way a user (and the Docker image) does: build its wheel, install it with
no extras into a clean virtualenv, and run the installed commands from outside the source tree.

The virtualenv with its dependencies is cached outside the clone, keyed by the hash of
pyproject.toml, so only the wheel is reinstalled on later runs. The cache is built in a fresh
directory and published by an atomic symlink swap: a killed build never leaves a cached venv
that looks usable. A file lock serialises runs that share the cache (parallel test sessions).
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import hashlib
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.services import ROOT, Process

# The install commands, shared with the Dockerfile (tests/test_deploy.py checks the two agree).
# "pip" runs as `<venv python> -m pip`; {dist} is the directory the wheel is built into.
BUILD_WHEEL = ("pip", "wheel", "--no-deps", "--wheel-dir", "{dist}", ".")
INSTALL_WHEEL = ("pip", "install", "{dist}/runcast-*.whl")
DOCKER_WHEEL_DIR = "/dist"
# With a warm cache the dependencies are installed already (same pyproject.toml): only the
# freshly built wheel goes in.
REINSTALL_ONLY = ("--no-deps", "--force-reinstall")

# Modules that need an extra; without it they must raise ImportError naming the extra.
OPTIONAL_MODULES = {"streaming.integrations.langgraph": "runcast[langgraph]"}
# What `pip install .[dev]` adds: none of it may be in a plain install.
DEV_ONLY = ("pytest", "schemathesis", "hypothesis", "honcho", "ruff", "langgraph")

PIP_TIMEOUT_S = 600
LOCK_WAIT_S = 600
STALE_AFTER_S = 7 * 24 * 3600  # cached venvs are rebuilt, or dropped when unused, after this
COMPLETE_MARKER = ".runcast-smoke-complete"
MISSING_MODULE = re.compile(r"(ModuleNotFoundError|ImportError): .*")


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(os.environ.get("RUNCAST_SMOKE_CACHE") or Path(base) / "runcast")


def pyproject_key() -> str:
    """pyproject.toml's hash (and the Python version: a venv is built for one interpreter)."""
    digest = hashlib.sha256((ROOT / "pyproject.toml").read_bytes())
    digest.update(f"python{sys.version_info.major}.{sys.version_info.minor}".encode())
    return digest.hexdigest()[:16]


def fill(template: tuple[str, ...], dist: str) -> list[str]:
    return [part.format(dist=dist) for part in template]


def clean_env(**extra: str) -> dict[str, str]:
    """The environment of a user's shell: nothing that points Python at the source tree or at
    the test runner's virtualenv."""
    drop = ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP", "PYTHONSAFEPATH")
    env = {k: v for k, v in os.environ.items() if k not in drop and not k.startswith("RUNCAST_")}
    env.update(PYTHONNOUSERSITE="1", PYTHONUNBUFFERED="1", PIP_DISABLE_PIP_VERSION_CHECK="1")
    env.update(extra)
    return env


def import_errors(text: str) -> list[str]:
    """The `ModuleNotFoundError: No module named 'x'` (or ImportError) lines of an output."""
    return sorted({m.group(0).strip() for m in MISSING_MODULE.finditer(text)})


def explain(what: str, output: str, tail_chars: int = 3000) -> str:
    errors = import_errors(output)
    head = f"{what}\n" + ("".join(f"  missing: {line}\n" for line in errors) if errors else "")
    return f"{head}--- output (tail) ---\n{output[-tail_chars:]}"


def run(args: list[str], what: str, cwd: Path, timeout: float = PIP_TIMEOUT_S,
        env: dict[str, str] | None = None) -> str:
    result = subprocess.run(args, check=False, cwd=cwd, env=env or clean_env(), capture_output=True,
                            text=True, timeout=timeout)
    output = result.stdout + result.stderr
    if result.returncode != 0:
        raise AssertionError(explain(f"{what} failed (exit {result.returncode}): "
                                     f"{shlex.join(args)}", output))
    return output


# --- the Dockerfile: its build context and its pip lines --------------------------------------

def dockerfile_instructions(name: str) -> list[list[str]]:
    """The arguments of each `NAME ...` instruction of the Dockerfile (continuations joined)."""
    text = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text())
    return [shlex.split(line)[1:] for line in text.splitlines()
            if line.strip().upper().startswith(name + " ")]


def dockerfile_pip_commands() -> list[list[str]]:
    """Every `pip ...` command of the Dockerfile's RUN lines (split at `&&`), in order."""
    commands = []
    for args in dockerfile_instructions("RUN"):
        command: list[str] = []
        for word in [*args, "&&"]:
            if word != "&&":
                command.append(word)
                continue
            if command and command[0] == "pip":
                commands.append(command)
            command = []
    return commands


def copy_build_context(dest: Path) -> None:
    """Copy what the Dockerfile COPYs from the clone (not `--from` a stage) into `dest`."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "build", "dist")
    for args in dockerfile_instructions("COPY"):
        if any(a.startswith("--from") for a in args):
            continue
        *sources, target = args
        for source in sources:
            src = ROOT / source
            if src.is_dir():
                shutil.copytree(src, dest / target, ignore=ignore, dirs_exist_ok=True)
            elif target.endswith("/"):
                (dest / target).mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, dest / target / src.name)
            else:
                (dest / target).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, dest / target)


def build_wheel(python: Path, workdir: Path) -> Path:
    """The wheel, built by BUILD_WHEEL from a copy of the Docker build context."""
    src, dist = workdir / "src", workdir / "dist"
    copy_build_context(src)
    run(pip(python, fill(BUILD_WHEEL, str(dist))), "building the wheel", cwd=src)
    wheels = sorted(dist.glob("runcast-*.whl"))
    assert len(wheels) == 1, f"expected one runcast wheel in {dist}: {wheels}"
    return wheels[0]


def pip(python: Path, command: list[str]) -> list[str]:
    assert command[0] == "pip", command
    args = [str(python), "-m", "pip", *command[1:]]
    return [hit for arg in args for hit in (sorted(glob.glob(arg)) if "*" in arg else [arg])]


# --- the cached clean virtualenv ---------------------------------------------------------------

@dataclass
class SmokeVenv:
    path: Path
    wheel: Path
    cold: bool  # True when this run built the cached venv (dependencies included)
    install_s: float

    @property
    def python(self) -> Path:
        return self.path / "bin" / "python"

    def bin(self, name: str) -> str:
        return str(self.path / "bin" / name)

    def script(self, code: str, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run([str(self.python), "-c", code], check=False, cwd=cwd, env=clean_env(),
                              capture_output=True, text=True, timeout=timeout)


@contextlib.contextmanager
def cache_lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        deadline = time.monotonic() + LOCK_WAIT_S
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                assert time.monotonic() < deadline, f"another test session holds {path}"
                time.sleep(0.5)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def usable(venv: Path) -> bool:
    """Complete, working, and younger than a week (so new releases of the dependencies, which
    could drop a module we rely on, are picked up even when pyproject.toml does not change)."""
    marker = venv / COMPLETE_MARKER
    if not marker.exists() or time.time() - marker.stat().st_mtime > STALE_AFTER_S:
        return False
    probe = subprocess.run([str(venv / "bin" / "python"), "-c", "import pip"],
                           env=clean_env(), capture_output=True, timeout=60, check=False)
    return probe.returncode == 0


def publish(cache: Path, link: Path, target: Path) -> None:
    """Point `link` at `target` atomically (a venv cannot be renamed: its scripts hold its
    path, so the rename is of a symlink to it)."""
    if link.exists() and not link.is_symlink():
        shutil.rmtree(link)
    staged = cache / f".{link.name}.{uuid.uuid4().hex[:8]}"
    os.symlink(target.name, staged)
    os.replace(staged, link)


def drop_orphans(cache: Path, name: str, keep: Path | None) -> None:
    """Venvs of this key left by killed or superseded builds (we hold the lock: none is used)."""
    for path in [*cache.glob(f"{name}.*"), *cache.glob(f".{name}.*")]:
        if path.name.endswith(".lock") or path == keep:
            continue
        if path.is_symlink() or path.is_file():
            path.unlink(missing_ok=True)
        else:
            shutil.rmtree(path, ignore_errors=True)


def prune_stale(cache: Path, keep: str) -> None:
    """Drop cached venvs of other pyproject.toml versions unused for a week (their lock file is
    touched on each use) and not in use now (their lock is free)."""
    for lock in cache.glob("smoke-venv-*.lock"):
        name = lock.name.removesuffix(".lock")
        if name == keep or time.time() - lock.stat().st_mtime < STALE_AFTER_S:
            continue
        with open(lock, "a") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue
            drop_orphans(cache, name, keep=None)
            (cache / name).unlink(missing_ok=True)
            lock.unlink(missing_ok=True)


@contextlib.contextmanager
def smoke_venv(workdir: Path) -> Iterator[SmokeVenv]:
    """A clean virtualenv with the freshly built wheel installed (no extras); held under the
    cache lock until the caller is done with it."""
    cache = cache_dir()
    name = f"smoke-venv-{pyproject_key()}"
    link = cache / name
    with cache_lock(cache / f"{name}.lock"):
        os.utime(cache / f"{name}.lock")
        prune_stale(cache, keep=name)
        started = time.monotonic()
        cold = not (link.is_symlink() and usable(link.resolve()))
        if cold:
            venv = cache / f"{name}.{uuid.uuid4().hex[:8]}"
            run([sys.executable, "-m", "venv", str(venv)], "creating the virtualenv", cwd=cache)
            wheel = build_wheel(venv / "bin" / "python", workdir)
            run(pip(venv / "bin" / "python", fill(INSTALL_WHEEL, str(wheel.parent))),
                "installing the wheel (no extras)", cwd=workdir)
            (venv / COMPLETE_MARKER).write_text(wheel.name + "\n")
            publish(cache, link, venv)
        else:
            venv = link.resolve()
            wheel = build_wheel(venv / "bin" / "python", workdir)
            command = [*fill(INSTALL_WHEEL, str(wheel.parent)), *REINSTALL_ONLY]
            run(pip(venv / "bin" / "python", command), "reinstalling the wheel", cwd=workdir)
        drop_orphans(cache, name, keep=venv)
        yield SmokeVenv(venv, wheel, cold, time.monotonic() - started)


# --- processes run from the venv, outside the source tree --------------------------------------

class VenvProcess(Process):
    """A Process started in `cwd` (not the clone: nothing may be imported from the source)."""

    def __init__(self, args: list[str], env: dict[str, str], name: str, cwd: Path) -> None:
        super().__init__(args, env, name)
        self.cwd = cwd

    def start(self) -> VenvProcess:
        self.log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(self.args, env=self.env, cwd=self.cwd, stdout=self.log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        return self

    def wait_until(self, ready, what: str, timeout: float = 90) -> None:
        """Poll `ready()` until true; fail naming any module the process could not import."""
        deadline = time.monotonic() + timeout
        while not ready():
            code = self.proc.poll()
            if code is not None:
                raise AssertionError(explain(f"`{shlex.join(self.args[:4])}` exited with code "
                                             f"{code} before {what}", self.output()))
            if time.monotonic() > deadline:
                raise AssertionError(explain(f"{self.name}: no {what} within {timeout:.0f} s",
                                             self.output()))
            time.sleep(0.1)


IMPORT_ALL = r"""
import importlib, importlib.metadata as md, json
names = sorted({str(f)[:-3].replace("/", ".").removesuffix(".__init__")
                for f in md.files("runcast") if str(f).endswith(".py")})
found = {}
for name in names:
    try:
        module = importlib.import_module(name)
        found[name] = {"ok": True, "file": module.__file__}
    except Exception as exc:
        found[name] = {"ok": False, "error": f"{type(exc).__name__}: {exc}",
                       "import_error": isinstance(exc, ImportError)}
print(json.dumps(found))
"""
