"""The `runcast` command line, run as a real subprocess against a real API, worker and Redis.

What is checked is what DESIGN.md ("Command line") and the CLI's documented exit codes promise:
a followed run exits 0 succeeded / 1 failed / 2 cancelled; 3 when the server cannot be reached or
refuses the key; 4 for a bad request or an unknown run or agent.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest

from tests.api_helpers import RUN_FIELDS, TERMINAL_STATUSES, wait_terminal, wait_until
from tests.redis_server import free_port
from tests.services import ROOT, start_api

RUNCAST = str(Path(sys.executable).parent / "runcast")
AUTH_KEY = "k1"
AUTH_SECRET = "a-long-test-secret-value-123"


def cli_env(url: str, api_key: str | None = None, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("RUNCAST_") and k not in ("FORCE_COLOR", "COLUMNS")}
    env.update(RUNCAST_URL=url, PYTHONUNBUFFERED="1", COLUMNS="80")  # a plain 80-column pipe
    if api_key is not None:
        env["RUNCAST_API_KEY"] = api_key
    env.update(extra)
    return env


def runcast(url: str, *args: str, api_key: str | None = None, timeout: float = 60,
            **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([RUNCAST, *args], check=False, env=cli_env(url, api_key, **env),
                          cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def flat(text: str) -> str:
    """Whitespace collapsed (rich wraps long messages at the console width)."""
    return " ".join(text.split())


def output(result: subprocess.CompletedProcess[str]) -> str:
    return flat(result.stdout + "\n" + result.stderr)


def followed_run_id(result: subprocess.CompletedProcess[str]) -> str:
    match = re.search(r"\brun ([0-9A-Za-z_-]{16,})", result.stderr)
    assert match, f"--follow did not name the run it submitted:\n{result.stderr}"
    return match.group(1)


def api_submit(http: httpx.Client, agent: str, payload: dict) -> str:
    response = http.post("/runs", json={"agent": agent, "input": payload})
    assert response.status_code == 202, response.text
    return response.json()["run_id"]


# submit


def test_submit_prints_the_run_as_json(api_url, http):
    result = runcast(api_url, "submit", "echo", "--input", '{"a": 1}')
    assert result.returncode == 0, output(result)
    run = json.loads(result.stdout)  # the whole of stdout is the run, machine-readable
    assert RUN_FIELDS <= set(run), set(run) ^ RUN_FIELDS
    assert run["agent"] == "echo"
    assert run["input"] == {"a": 1}
    assert run["status"] in {"queued", "running", "succeeded"}
    done = wait_terminal(http, run["run_id"])
    assert done["status"] == "succeeded"
    assert done["output"] == {"echo": {"a": 1}}


def test_follow_countdown_exits_0_and_shows_the_output(api_url, http):
    result = runcast(api_url, "submit", "countdown", "--input", '{"steps": 3, "delay": 0.05}',
                     "--follow")
    assert result.returncode == 0, output(result)
    assert "succeeded" in result.stdout
    assert re.search(r"""['"]steps['"]: 3\b""", result.stdout), result.stdout
    run = http.get(f"/runs/{followed_run_id(result)}").json()
    assert run["status"] == "succeeded"
    assert run["output"] == {"steps": 3}


def test_follow_failing_run_exits_1_and_shows_the_error(api_url):
    result = runcast(api_url, "submit", "fail", "--input", '{"message": "boom"}', "--follow")
    assert result.returncode == 1, output(result)
    assert "boom" in output(result)
    assert "failed" in output(result)
    assert "agent_error" in output(result)


def test_follow_tokens_prints_the_text(api_url):
    text = "runcast streams every token of the run"
    result = runcast(api_url, "submit", "tokens", "--input", json.dumps({"text": text}),
                     "--follow")
    assert result.returncode == 0, output(result)
    assert text in result.stdout  # token after token, one text


def test_followed_run_cancelled_from_another_process_exits_2(api_url, http, tmp_path):
    out, err = tmp_path / "stdout", tmp_path / "stderr"
    with open(out, "w") as stdout, open(err, "w") as stderr:
        follower = subprocess.Popen(
            [RUNCAST, "submit", "sleep", "--input", '{"seconds": 60}', "--follow"],
            env=cli_env(api_url), cwd=ROOT, stdout=stdout, stderr=stderr, text=True,
        )
    try:
        deadline = time.monotonic() + 30
        while not (match := re.search(r"\brun ([0-9A-Za-z_-]{16,})", err.read_text())):
            assert follower.poll() is None, err.read_text()
            assert time.monotonic() < deadline, "the follower never named its run"
            time.sleep(0.05)
        run_id = match.group(1)
        wait_until(http, run_id, lambda run: run["status"] == "running")

        cancel = runcast(api_url, "cancel", run_id, "--reason", "changed my mind")
        assert cancel.returncode == 0, output(cancel)
        cancelled = json.loads(cancel.stdout)
        assert cancelled["run_id"] == run_id
        assert cancelled["cancel_requested"] is True

        assert follower.wait(timeout=30) == 2, out.read_text() + err.read_text()
        assert "cancelled" in out.read_text()
        assert http.get(f"/runs/{run_id}").json()["status"] == "cancelled"

        again = runcast(api_url, "cancel", run_id)  # it already ended: the API says 409
        assert again.returncode == 4, output(again)
        assert "already ended" in output(again) or "cancelled" in output(again)
    finally:
        if follower.poll() is None:
            follower.kill()
            follower.wait()


# get, runs, tail


def test_get_prints_the_run(api_url, http):
    run_id = api_submit(http, "echo", {"x": "get"})
    wait_terminal(http, run_id)
    result = runcast(api_url, "get", run_id)
    assert result.returncode == 0, output(result)
    run = json.loads(result.stdout)
    assert run["run_id"] == run_id
    assert run["status"] == "succeeded"
    assert run["output"] == {"echo": {"x": "get"}}


def test_get_unknown_run_exits_4(api_url):
    result = runcast(api_url, "get", "no-such-run-" + uuid.uuid4().hex)
    assert result.returncode == 4, output(result)
    assert "no run" in output(result)


def test_runs_lists_the_newest_runs_with_whole_ids(api_url, http):
    echo_id = api_submit(http, "echo", {"x": "runs"})
    fail_id = api_submit(http, "fail", {"message": "listed"})
    wait_terminal(http, echo_id)
    wait_terminal(http, fail_id)

    result = runcast(api_url, "runs", "--agent", "fail", "--limit", "5")
    assert result.returncode == 0, output(result)
    assert fail_id in result.stdout  # whole, so it can be pasted into get/cancel/tail
    assert echo_id not in result.stdout  # --agent filters
    assert "failed" in result.stdout

    result = runcast(api_url, "runs", "--limit", "2")
    assert result.returncode == 0, output(result)
    assert fail_id in result.stdout  # newest first


def test_tail_exits_with_the_runs_outcome(api_url, http):
    ok = api_submit(http, "echo", {"x": "tail"})
    failed = api_submit(http, "fail", {"message": "tail-boom"})
    cancelled = api_submit(http, "sleep", {"seconds": 60})
    assert http.post(f"/runs/{cancelled}/cancel", json={}).status_code == 202
    for run_id in (ok, failed, cancelled):
        wait_terminal(http, run_id)

    result = runcast(api_url, "tail", ok)
    assert result.returncode == 0, output(result)
    assert "succeeded" in result.stdout
    assert re.search(r"""['"]x['"]: ['"]tail['"]""", result.stdout), result.stdout

    result = runcast(api_url, "tail", failed)
    assert result.returncode == 1, output(result)
    assert "tail-boom" in output(result)

    result = runcast(api_url, "tail", cancelled)
    assert result.returncode == 2, output(result)
    assert "cancelled" in result.stdout

    result = runcast(api_url, "tail", "no-such-run-" + uuid.uuid4().hex)
    assert result.returncode == 4, output(result)


def test_tail_follows_a_live_run_to_its_end(api_url, http):
    run_id = api_submit(http, "countdown", {"steps": 5, "delay": 0.2})
    result = runcast(api_url, "tail", run_id)
    assert result.returncode == 0, output(result)
    assert re.search(r"""['"]steps['"]: 5\b""", result.stdout), result.stdout
    assert http.get(f"/runs/{run_id}").json()["status"] == "succeeded"


# errors


def test_unknown_agent_is_a_clear_error(api_url):
    result = runcast(api_url, "submit", "no_such_agent", "--input", "{}")
    assert result.returncode == 4, output(result)
    assert "unknown agent" in output(result)
    assert "no_such_agent" in output(result)
    assert "Traceback" not in output(result)


def test_invalid_input_json_is_a_clear_error(api_url):
    result = runcast(api_url, "submit", "echo", "--input", "{not json")
    assert result.returncode == 4, output(result)
    assert "--input is not JSON" in output(result)
    assert "Traceback" not in output(result)


def test_unreachable_server_exits_3():
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    for args in (["submit", "echo", "--input", "{}"], ["runs"], ["tail", "some-run"]):
        result = runcast(url, *args)
        assert result.returncode == 3, (args, output(result))
        assert "cannot reach runcast" in output(result)
        assert url in output(result)
        assert "Traceback" not in output(result)


@pytest.fixture(scope="module")
def auth_api_url(redis_url, worker):
    process, url = start_api(redis_url, RUNCAST_API_KEYS=AUTH_KEY, RUNCAST_SECRET=AUTH_SECRET)
    yield url
    process.stop()


def test_refused_api_key_exits_3(auth_api_url):
    for key in (None, "wrong-key"):
        result = runcast(auth_api_url, "submit", "echo", "--input", "{}", api_key=key)
        assert result.returncode == 3, (key, output(result))
        assert "API key" in output(result)
        assert "RUNCAST_API_KEY" in output(result)
        result = runcast(auth_api_url, "runs", api_key=key)
        assert result.returncode == 3, (key, output(result))

    # the right key opens every call a followed run makes (submit, then the stream)
    result = runcast(auth_api_url, "submit", "echo", "--input", '{"k": 1}', "--follow",
                     api_key=AUTH_KEY)
    assert result.returncode == 0, output(result)
    assert "succeeded" in result.stdout


# batch


def read_results(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_batch_writes_one_result_per_line_in_order(api_url, http, tmp_path):
    inputs = [{"i": i, "word": f"w{i}"} for i in range(7)]
    source = tmp_path / "inputs.jsonl"
    source.write_text("".join(json.dumps(item) + "\n" for item in inputs))
    out = tmp_path / "results.jsonl"

    result = runcast(api_url, "batch", str(source), "--agent", "echo", "--out", str(out))
    assert result.returncode == 0, output(result)
    results = read_results(out)
    assert [r["line"] for r in results] == list(range(1, 8))
    assert [r["status"] for r in results] == ["succeeded"] * 7
    assert [r["output"] for r in results] == [{"echo": item} for item in inputs]
    assert len({r["run_id"] for r in results}) == 7
    for r, item in zip(results, inputs, strict=True):  # each result is that line's real run
        run = http.get(f"/runs/{r['run_id']}").json()
        assert (run["agent"], run["input"], run["status"]) == ("echo", item, "succeeded")


def test_batch_reports_failed_lines(api_url, tmp_path):
    source = tmp_path / "inputs.jsonl"
    source.write_text('{"steps": 1, "delay": 0}\n{"steps": "many"}\n{"steps": 2, "delay": 0}\n')
    out = tmp_path / "results.jsonl"
    result = runcast(api_url, "batch", str(source), "--agent", "countdown", "--out", str(out))
    assert result.returncode != 0, output(result)
    results = read_results(out)
    assert [r["status"] for r in results] == ["succeeded", "failed", "succeeded"]
    assert results[1]["error"]["code"] == "agent_error"
    assert [r["output"] for r in results] == [{"steps": 1}, None, {"steps": 2}]


def test_batch_unknown_agent_or_bad_line_is_a_clear_error(api_url, tmp_path):
    source = tmp_path / "inputs.jsonl"
    source.write_text('{"a": 1}\n')
    result = runcast(api_url, "batch", str(source), "--agent", "no_such_agent",
                     "--out", str(tmp_path / "r1.jsonl"))
    assert result.returncode == 4, output(result)
    assert "unknown agent" in output(result)

    source.write_text('{"a": 1}\n{oops\n')
    result = runcast(api_url, "batch", str(source), "--agent", "echo",
                     "--out", str(tmp_path / "r2.jsonl"))
    assert result.returncode == 4, output(result)
    assert ":2:" in output(result) and "not JSON" in output(result)


def tagged_runs(http: httpx.Client, agent: str, tag: str) -> list[dict]:
    response = http.get("/runs", params={"agent": agent, "limit": 1000})
    assert response.status_code == 200, response.text
    body = response.json()
    return [run for run in body["runs"]
            if isinstance(run["input"], dict) and run["input"].get("tag") == tag]


def test_interrupted_batch_resumes_without_duplicate_runs(api_url, http, tmp_path):
    tag, total = uuid.uuid4().hex, 30
    # 0.6 s each: 30 runs outlast the window between the third result and the Ctrl-C on a busy
    # machine, however many workers the session has started
    seconds = 0.6
    inputs = [{"seconds": seconds, "tag": tag, "i": i} for i in range(total)]
    source = tmp_path / "inputs.jsonl"
    source.write_text("".join(json.dumps(item) + "\n" for item in inputs))
    out = tmp_path / "results.jsonl"
    args = [RUNCAST, "batch", str(source), "--agent", "sleep", "--out", str(out)]

    first = subprocess.Popen(args, env=cli_env(api_url), cwd=ROOT, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while not (out.exists() and len(out.read_text().splitlines()) >= 3):
            assert first.poll() is None, "the first pass ended before it was interrupted"
            assert time.monotonic() < deadline, "the first pass wrote no results"
            time.sleep(0.02)
        first.send_signal(signal.SIGINT)  # Ctrl-C
        assert first.wait(timeout=30) != 0
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()

    written = read_results(out)
    assert 3 <= len(written) < total, "the interruption came too late to test anything"
    assert [r["line"] for r in written] == list(range(1, len(written) + 1))
    submitted = tagged_runs(http, "sleep", tag)
    # Precondition: runs were submitted for lines not written yet, so resuming has some to reuse.
    assert len(submitted) > len(written), (len(submitted), len(written))
    # A write cut by a hard kill leaves half a line behind: the resumed pass must redo it.
    with out.open("a") as sink:
        sink.write(f'{{"line": {len(written) + 1}, "run_id": "cut-sho')

    second = subprocess.run(args, check=False, env=cli_env(api_url), cwd=ROOT, capture_output=True,
                            text=True, timeout=90)
    assert second.returncode == 0, output(second)

    results = read_results(out)
    assert [r["line"] for r in results] == list(range(1, total + 1))
    assert [r["status"] for r in results] == ["succeeded"] * total
    assert [r["output"] for r in results] == [{"slept": seconds}] * total
    assert results[: len(written)] == written  # finished lines were not run again
    runs = tagged_runs(http, "sleep", tag)
    assert len(runs) == total, f"{len(runs)} runs for {total} lines: the resume made duplicates"
    assert {r["run_id"] for r in results} == {run["run_id"] for run in runs}
    assert {run["run_id"] for run in submitted} <= {r["run_id"] for r in results}
    assert all(run["status"] in TERMINAL_STATUSES for run in runs)


SMALL_CAP = "2000"  # RUNCAST_MAX_INPUT_BYTES of the capped API and of the command line


@pytest.fixture(scope="module")
def capped_api_url(redis_url, worker):
    """An API that refuses request bodies over SMALL_CAP bytes."""
    process, url = start_api(redis_url, RUNCAST_MAX_INPUT_BYTES=SMALL_CAP)
    yield url
    process.stop()


def test_batch_splits_its_requests_to_fit_the_body_cap(capped_api_url, http, tmp_path):
    """40 lines of ~130 bytes: too many for one 2,000-byte request, so several batches."""
    tag, total = uuid.uuid4().hex, 40
    inputs = [{"i": i, "tag": tag, "pad": "x" * 60} for i in range(total)]
    source = tmp_path / "inputs.jsonl"
    source.write_text("".join(json.dumps(item) + "\n" for item in inputs))
    assert len(source.read_bytes()) > 2 * int(SMALL_CAP)
    out = tmp_path / "results.jsonl"

    result = runcast(capped_api_url, "batch", str(source), "--agent", "echo", "--out", str(out),
                     RUNCAST_MAX_INPUT_BYTES=SMALL_CAP)
    assert result.returncode == 0, output(result)
    assert f"results in {out}" in output(result)
    results = read_results(out)
    assert [r["line"] for r in results] == list(range(1, total + 1))
    assert [r["status"] for r in results] == ["succeeded"] * total
    assert [r["output"] for r in results] == [{"echo": item} for item in inputs]
    runs = tagged_runs(http, "echo", tag)
    assert {run["run_id"] for run in runs} == {r["run_id"] for r in results}
    assert len({run["batch_id"] for run in runs}) >= 3, "one request per batch, each capped"


def test_batch_line_too_large_for_any_request_is_a_clear_error(capped_api_url, http, tmp_path):
    tag = uuid.uuid4().hex
    source = tmp_path / "inputs.jsonl"
    source.write_text(json.dumps({"tag": tag}) + "\n"
                      + json.dumps({"tag": tag, "pad": "x" * 2500}) + "\n")
    out = tmp_path / "results.jsonl"
    result = runcast(capped_api_url, "batch", str(source), "--agent", "echo", "--out", str(out),
                     RUNCAST_MAX_INPUT_BYTES=SMALL_CAP)
    assert result.returncode == 4, output(result)
    assert ":2:" in output(result) and "RUNCAST_MAX_INPUT_BYTES" in output(result)
    assert tagged_runs(http, "echo", tag) == [], "nothing is submitted"
