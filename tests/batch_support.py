"""Helpers of the batch tests: reading a batch stream off the wire, and its invariants."""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from typing import Any

import httpx

from tests.api_helpers import TERMINAL_STATUSES, FrameReader

RUN_FRAME_FIELDS = {"batch_id", "index", "run_id", "status"}
DONE_FRAME_FIELDS = {"batch_id", "total", "counts"}
NEXT_STATUSES = {"queued": {"running", "cancelled"},
                 "running": {"queued", "succeeded", "failed", "cancelled"}}


@dataclass
class BatchFrame:
    seq: int
    event: str
    data: dict[str, Any]


def batch_frames(text_chunks, stop_after: int | None = None) -> list[BatchFrame]:
    """Frames of a batch stream (`id: <seq>`, `event: run|done`, `data: ...`) until `done`, or
    until `stop_after` frames were read."""
    reader = FrameReader()
    frames: list[BatchFrame] = []
    for text in text_chunks:
        for frame in reader.feed(text):
            assert frame.id.isdigit(), frame
            frames.append(BatchFrame(int(frame.id), frame.event, frame.data))
            if frame.event == "done" or (stop_after is not None and len(frames) >= stop_after):
                return frames
    return frames


def read_batch_stream(url: str, batch_id: str, *, after: int | None = None,
                      last_event_id: int | None = None, stop_after: int | None = None,
                      timeout: float = 180) -> list[BatchFrame]:
    headers = {} if last_event_id is None else {"Last-Event-ID": str(last_event_id)}
    params = {} if after is None else {"after": after}
    with httpx.stream("GET", f"{url}/batches/{batch_id}/stream", params=params, headers=headers,
                      timeout=timeout) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        return batch_frames(response.iter_text(), stop_after)


@dataclass
class Subscriber:
    """A batch stream read in a thread; `frames` grows as frames arrive."""

    url: str
    batch_id: str
    frames: list[BatchFrame] = field(default_factory=list)
    error: BaseException | None = None

    def start(self) -> Subscriber:
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()
        return self

    def _read(self) -> None:
        try:
            with httpx.stream("GET", f"{self.url}/batches/{self.batch_id}/stream",
                              timeout=300) as response:
                reader = FrameReader()
                for text in response.iter_text():
                    for frame in reader.feed(text):
                        self.frames.append(BatchFrame(int(frame.id), frame.event, frame.data))
                        if frame.event == "done":
                            return
        except BaseException as exc:  # noqa: BLE001 - reported by join()
            self.error = exc

    def join(self, timeout: float) -> list[BatchFrame]:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), f"no done frame after {timeout} s"
        assert self.error is None, self.error
        return self.frames


def check_batch_frames(frames: list[BatchFrame], batch_id: str, run_ids: list[str],
                       first_seq: int = 1) -> dict[str, list[str]]:
    """The contract's invariants of a finished batch's stream read from `first_seq`: ids
    contiguous, one `run` frame per status change (each a legal change; one terminal status per
    run), `done` last with counts that match. Returns each run's statuses in order."""
    assert frames, "no frames"
    assert [f.seq for f in frames] == list(range(first_seq, first_seq + len(frames))), \
        "batch seq ids are not contiguous"
    assert frames[-1].event == "done", frames[-1]
    assert [f.event for f in frames[:-1]] == ["run"] * (len(frames) - 1)
    statuses: dict[str, list[str]] = {}
    for frame in frames[:-1]:
        assert set(frame.data) == RUN_FRAME_FIELDS, frame.data
        assert frame.data["batch_id"] == batch_id
        assert run_ids[frame.data["index"]] == frame.data["run_id"], frame.data
        statuses.setdefault(frame.data["run_id"], []).append(frame.data["status"])
    done = frames[-1].data
    assert set(done) == DONE_FRAME_FIELDS, done
    assert done["batch_id"] == batch_id and done["total"] == len(run_ids)
    assert sum(done["counts"].values()) == len(run_ids), done
    if first_seq == 1:
        assert set(statuses) == set(run_ids), "some run has no frame"
        finals: dict[str, int] = {}
        for run_id, seen in statuses.items():
            previous = "queued"
            for status in seen:
                assert status in NEXT_STATUSES[previous], (run_id, seen)
                previous = status
            assert seen[-1] in TERMINAL_STATUSES, (run_id, seen)
            finals[seen[-1]] = finals.get(seen[-1], 0) + 1
        assert finals == done["counts"], (finals, done["counts"])
    return statuses


def assert_error(response: httpx.Response, status: int) -> None:
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["content-type"].startswith("application/json")
    assert response.json().get("detail"), response.text


def ndjson(text: str) -> list[dict]:
    assert text.endswith("\n") or not text
    return [json.loads(line) for line in text.splitlines()]
