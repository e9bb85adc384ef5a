"""Helpers of the HTTP API tests: a strict reader of SSE wire frames, polling, worker saturation.

The SSE reader here is deliberately independent of `api.sse_parse` (the client's parser is
under test too): it checks the exact lines the contract promises.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from typing import Any, Self

import httpx

RUN_FIELDS = {
    "run_id", "agent", "status", "created_at", "started_at", "finished_at", "attempt", "input",
    "output", "error", "progress", "last_seq", "cancel_requested", "batch_id", "metadata",
    "stream_token", "webhook", "webhook_status",
}
ENVELOPE_FIELDS = {"run_id", "seq", "type", "ts", "data"}
TERMINAL_STATUSES = {"succeeded", "failed", "cancelled"}
TERMINAL_TYPES = {"complete", "error", "cancelled"}


@dataclass
class Frame:
    id: str
    event: str
    data: dict[str, Any]

    @property
    def seq(self) -> int:
        return self.data["seq"]


def parse_frame(block: str) -> Frame | None:
    """One SSE frame (the text between blank lines) as the contract writes it: `id: <seq>`,
    `event: <type>`, `data: <envelope JSON>` (comments such as `: ping` are skipped)."""
    lines = [line for line in block.split("\n") if line and not line.startswith(":")]
    if not lines:
        return None
    fields: dict[str, str] = {}
    for line in lines:
        name, sep, value = line.partition(": ")
        assert sep, f"not a 'field: value' line: {line!r}"
        assert name not in fields, f"field {name!r} twice in one frame: {block!r}"
        fields[name] = value
    assert set(fields) == {"id", "event", "data"}, f"unexpected frame fields: {block!r}"
    frame = Frame(id=fields["id"], event=fields["event"], data=json.loads(fields["data"]))
    return frame


class FrameReader:
    """Splits a text/event-stream body, arriving in chunks, into frames."""

    def __init__(self) -> None:
        self.buffer = ""

    def feed(self, text: str) -> list[Frame]:
        self.buffer = (self.buffer + text).replace("\r\n", "\n")
        frames = []
        while "\n\n" in self.buffer:
            block, self.buffer = self.buffer.split("\n\n", 1)
            frame = parse_frame(block)
            if frame is not None:
                frames.append(frame)
        return frames


def read_frames(response: httpx.Response, until_seq: int | None = None) -> list[Frame]:
    """Frames of a streamed response; stops after `until_seq` (else at the end of the body)."""
    reader = FrameReader()
    frames: list[Frame] = []
    for text in response.iter_text():
        for frame in reader.feed(text):
            frames.append(frame)
            if until_seq is not None and frame.seq >= until_seq:
                return frames
    assert reader.buffer.strip() == "", f"body ended inside a frame: {reader.buffer!r}"
    return frames


def parse_body(text: str) -> list[Frame]:
    reader = FrameReader()
    frames = reader.feed(text)
    assert reader.buffer.strip() == "", f"body ended inside a frame: {reader.buffer!r}"
    return frames


def assert_frame_matches_envelope(frame: Frame, run_id: str) -> None:
    assert set(frame.data) == ENVELOPE_FIELDS, frame.data
    assert frame.id == str(frame.data["seq"])
    assert frame.event == frame.data["type"]
    assert frame.data["run_id"] == run_id
    assert isinstance(frame.data["data"], dict)


def submit(http: httpx.Client, agent: str, input: Any = None, **body: Any) -> dict[str, Any]:
    response = http.post("/runs", json={"agent": agent, "input": input or {}, **body})
    assert response.status_code == 202, response.text
    return response.json()


def get_run(http: httpx.Client, run_id: str, **params: Any) -> dict[str, Any]:
    response = http.get(f"/runs/{run_id}", params=params)
    assert response.status_code == 200, response.text
    return response.json()


def wait_until(http: httpx.Client, run_id: str, predicate, timeout: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        run = get_run(http, run_id)
        if predicate(run):
            return run
        assert time.monotonic() < deadline, f"run never got there: {run}"
        time.sleep(0.05)


def wait_terminal(http: httpx.Client, run_id: str, timeout: float = 60) -> dict[str, Any]:
    response = http.get(f"/runs/{run_id}/wait", params={"timeout": timeout},
                        timeout=timeout + 30)
    assert response.status_code == 200, response.text
    run = response.json()
    assert run["status"] in TERMINAL_STATUSES, run
    return run


def all_events(http: httpx.Client, run_id: str, **params: Any) -> list[dict]:
    response = http.get(f"/runs/{run_id}/events", params={"limit": 10_000, **params})
    assert response.status_code == 200, response.text
    return response.json()["events"]


def words(n: int) -> str:
    return " ".join(f"w{i}" for i in range(n))


def marker() -> str:
    return uuid.uuid4().hex


class Saturated:
    """Every worker process busy with a cooperative `sleep` run, so the next run stays queued.

    Sleepers are submitted until one of them stays `queued`: that one is `probe`. `release()`
    cancels all of them.
    """

    def __init__(self, http: httpx.Client, seconds: float = 60, max_runs: int = 16) -> None:
        self.http = http
        self.sleepers: list[str] = []
        self.probe: str | None = None
        try:
            for _ in range(max_runs):
                run_id = submit(http, "sleep", {"seconds": seconds})["run_id"]
                deadline = time.monotonic() + 3.0
                while time.monotonic() < deadline:
                    if get_run(http, run_id)["status"] != "queued":
                        break
                    time.sleep(0.05)
                else:
                    self.probe = run_id
                    return
                self.sleepers.append(run_id)
            raise AssertionError(f"the worker took {max_runs} sleep runs at once")
        except BaseException:
            self.release()
            raise

    def release(self) -> None:
        for run_id in [*self.sleepers, *([self.probe] if self.probe else [])]:
            self.http.post(f"/runs/{run_id}/cancel", json={"reason": "test cleanup"})
        for run_id in self.sleepers:
            wait_terminal(self.http, run_id, timeout=30)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
