"""SSE over the real server: the wire format, replay then live, resume, late and parallel
subscribers, POST /runs/stream (DESIGN.md, "HTTP API")."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from tests.api_helpers import (
    FrameReader,
    all_events,
    assert_frame_matches_envelope,
    get_run,
    marker,
    parse_body,
    read_frames,
    submit,
    wait_terminal,
    wait_until,
    words,
)
from tests.log_check import check_log


def assert_sse_headers(response: httpx.Response) -> None:
    assert response.status_code == 200, response.read()
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.headers["x-accel-buffering"] == "no"


def envelopes(frames) -> list[dict]:
    return [frame.data for frame in frames]


def test_wire_format(http):
    run_id = submit(http, "tokens", {"text": "alpha beta gamma"})["run_id"]
    wait_terminal(http, run_id)
    started = time.monotonic()
    with http.stream("GET", f"/runs/{run_id}/stream") as response:
        assert_sse_headers(response)
        raw = response.read().decode()
    assert time.monotonic() - started < 10  # closed after the terminal event
    # every frame is exactly the lines `id: <seq>`, `event: <type>`, `data: <json>` (parse_body
    # refuses any other field, a repeated one, or a body cut inside a frame)
    frames = parse_body(raw)
    assert len(frames) == 5
    for frame in frames:
        assert_frame_matches_envelope(frame, run_id)
    assert [f.event for f in frames] == ["started", "token", "token", "token", "complete"]
    assert [f.id for f in frames] == ["1", "2", "3", "4", "5"]
    assert envelopes(frames) == all_events(http, run_id)
    assert frames[-1].data["data"]["output"] == {"text": "alpha beta gamma"}


def test_custom_event_types_on_the_wire(http):
    run_id = submit(http, "custom", {"document_id": "doc-1"})["run_id"]
    wait_terminal(http, run_id)
    frames = parse_body(http.get(f"/runs/{run_id}/stream").text)
    assert [f.event for f in frames] == ["started", "custom:analysis_started",
                                         "custom:analysis_complete", "complete"]
    assert frames[2].data["data"] == {"document_id": "doc-1", "findings": 3}


def test_replay_then_live_without_gap_or_duplicate(http):
    n = 30
    run_id = submit(http, "tokens", {"text": words(n), "delay": 0.05})["run_id"]
    wait_until(http, run_id, lambda r: r["last_seq"] >= 5)
    before = http.get(f"/runs/{run_id}/events").json()
    assert before["done"] is False and len(before["events"]) < n + 2  # truly mid-run
    with http.stream("GET", f"/runs/{run_id}/stream") as response:
        assert_sse_headers(response)
        frames = read_frames(response)
    log = envelopes(frames)
    check_log(run_id, log)
    assert len(log) == n + 2
    assert log[: len(before["events"])] == before["events"]  # the replayed part
    assert log == all_events(http, run_id)


@pytest.mark.parametrize("how", ["last-event-id", "after"])
def test_resume_in_the_middle_of_a_running_run(http, how):
    n = 40
    run_id = submit(http, "tokens", {"text": words(n), "delay": 0.04})["run_id"]
    with http.stream("GET", f"/runs/{run_id}/stream") as response:
        first = read_frames(response, until_seq=10)
    assert [f.seq for f in first] == list(range(1, 11))
    assert get_run(http, run_id)["status"] in {"queued", "running"}  # resuming mid-run

    if how == "last-event-id":
        request = {"headers": {"Last-Event-ID": "10"}}
    else:
        request = {"params": {"after": 10}}
    with http.stream("GET", f"/runs/{run_id}/stream", **request) as response:
        assert_sse_headers(response)
        rest = read_frames(response)
    assert rest[0].seq == 11
    log = envelopes(first + rest)
    check_log(run_id, log)
    assert len(log) == n + 2
    assert log == all_events(http, run_id)


def test_last_event_id_wins_over_after(http):
    run_id = submit(http, "tokens", {"text": words(8)})["run_id"]
    wait_terminal(http, run_id)
    text = http.get(f"/runs/{run_id}/stream", params={"after": 7},
                    headers={"Last-Event-ID": "3"}).text
    assert [f.seq for f in parse_body(text)] == list(range(4, 11))


def test_late_subscriber_gets_the_whole_log_and_the_stream_closes(http):
    run_id = submit(http, "countdown", {"steps": 4, "delay": 0.01})["run_id"]
    wait_terminal(http, run_id)
    time.sleep(0.2)
    started = time.monotonic()
    response = http.get(f"/runs/{run_id}/stream", timeout=10)  # the whole body: it must end
    assert time.monotonic() - started < 10
    assert_sse_headers(response)
    frames = parse_body(response.text)
    check_log(run_id, envelopes(frames))
    assert [f.event for f in frames] == ["started"] + ["progress"] * 4 + ["complete"]
    assert envelopes(frames) == all_events(http, run_id)

    # resuming from the middle of an ended run: the rest, then closed
    rest = parse_body(http.get(f"/runs/{run_id}/stream", params={"after": 3}).text)
    assert [f.seq for f in rest] == [4, 5, 6]
    # resuming at the terminal event of an ended run: nothing, closed at once
    started = time.monotonic()
    tail = http.get(f"/runs/{run_id}/stream", headers={"Last-Event-ID": "6"}, timeout=10)
    assert tail.status_code == 200 and parse_body(tail.text) == []
    assert time.monotonic() - started < 10


def test_failed_and_cancelled_runs_end_their_streams(http):
    failed = submit(http, "fail", {"message": "nope"})["run_id"]
    frames = parse_body(http.get(f"/runs/{failed}/stream", timeout=30).text)
    assert frames[-1].event == "error"
    assert frames[-1].data["data"]["error"] == "nope"
    assert frames[-1].data["data"]["code"] == "agent_error"

    sleeper = submit(http, "sleep", {"seconds": 30})["run_id"]
    with http.stream("GET", f"/runs/{sleeper}/stream", timeout=30) as response:
        reader, frames = FrameReader(), []
        for text in response.iter_text():
            for frame in reader.feed(text):
                frames.append(frame)
                if frame.event == "started":
                    assert http.post(f"/runs/{sleeper}/cancel",
                                     json={"reason": "stop"}).status_code == 202
    check_log(sleeper, envelopes(frames))
    assert frames[-1].event == "cancelled" and frames[-1].data["data"]["reason"] == "stop"


async def test_two_subscribers_get_identical_logs(api_url):
    n = 30
    async with httpx.AsyncClient(base_url=api_url, timeout=60) as client:
        response = await client.post("/runs", json={
            "agent": "async_tokens", "input": {"text": words(n), "delay": 0.03}})
        run_id = response.json()["run_id"]

        async def subscribe(delay: float) -> list[dict]:
            await asyncio.sleep(delay)
            reader, frames = FrameReader(), []
            async with client.stream("GET", f"/runs/{run_id}/stream") as stream:
                assert stream.status_code == 200
                async for text in stream.aiter_text():
                    frames += reader.feed(text)
            return envelopes(frames)

        one, two = await asyncio.gather(subscribe(0), subscribe(0.3))
        log = (await client.get(f"/runs/{run_id}/events")).json()["events"]
    assert one == two == log
    check_log(run_id, one)
    assert len(one) == n + 2


def test_submit_and_stream(http):
    with http.stream("POST", "/runs/stream", json={
            "agent": "tokens", "input": {"text": "one two three", "delay": 0.02}}) as response:
        assert_sse_headers(response)
        run_id = response.headers["x-run-id"]
        frames = read_frames(response)
    for frame in frames:
        assert_frame_matches_envelope(frame, run_id)
    log = envelopes(frames)
    check_log(run_id, log)
    assert [e["type"] for e in log] == ["started", "token", "token", "token", "complete"]
    run = get_run(http, run_id)
    assert run["status"] == "succeeded" and run["output"] == {"text": "one two three"}
    assert log == all_events(http, run_id)


def test_submit_and_stream_refuses_what_post_runs_refuses(http):
    response = http.post("/runs/stream", json={"agent": "no-such-agent"})
    assert response.status_code == 404 and response.json()["detail"]
    response = http.post("/runs/stream", json={"agent": "echo", "events": ["bogus"]})
    assert response.status_code == 422 and response.json()["detail"]
    response = http.post("/runs/stream", json={"agent": "echo", "nope": 1})
    assert response.status_code == 422 and response.json()["detail"]


def test_submit_and_stream_is_idempotent_by_key(http):
    key = marker()
    body = {"agent": "echo", "input": {"k": 1}}
    with http.stream("POST", "/runs/stream", json=body,
                     headers={"Idempotency-Key": key}) as response:
        first = response.headers["x-run-id"]
        read_frames(response)
    with http.stream("POST", "/runs/stream", json=body,
                     headers={"Idempotency-Key": key}) as response:
        assert response.headers["x-run-id"] == first
        assert [f.seq for f in read_frames(response)] == [1, 2]


def test_the_run_goes_on_when_the_stream_caller_leaves(http):
    n = 20
    with http.stream("POST", "/runs/stream", json={
            "agent": "tokens", "input": {"text": words(n), "delay": 0.05}}) as response:
        run_id = response.headers["x-run-id"]
        first = read_frames(response, until_seq=2)
    assert [f.seq for f in first] == [1, 2]
    # the caller closed its connection mid-run
    assert get_run(http, run_id)["status"] in {"queued", "running"}
    done = wait_terminal(http, run_id)
    assert done["status"] == "succeeded"
    assert done["output"] == {"text": words(n)}
    log = all_events(http, run_id)
    check_log(run_id, log)
    assert len(log) == n + 2


def test_bad_resume_point_is_422_and_unknown_run_404(http):
    run_id = submit(http, "echo")["run_id"]
    wait_terminal(http, run_id)
    for value in ("abc", "-1", "1.5", "0x10", "1e3"):
        response = http.get(f"/runs/{run_id}/stream", headers={"Last-Event-ID": value})
        assert response.status_code == 422, (value, response.text)
        assert response.json()["detail"]
    for value in (-1, "x"):
        response = http.get(f"/runs/{run_id}/stream", params={"after": value})
        assert response.status_code == 422 and response.json()["detail"]
    response = http.get(f"/runs/{marker()}/stream")
    assert response.status_code == 404 and response.json()["detail"]
    assert response.headers["content-type"].startswith("application/json")


@pytest.mark.slow
def test_ping_comments_keep_a_quiet_stream_alive(http):
    run_id = submit(http, "block", {"seconds": 25})["run_id"]  # no events while it blocks
    try:
        wait_until(http, run_id, lambda r: r["last_seq"] >= 1)
        started = time.monotonic()
        with http.stream("GET", f"/runs/{run_id}/stream", params={"after": 1}) as response:
            assert_sse_headers(response)
            received = ""
            for text in response.iter_text():
                received += text
                if ": ping" in received:
                    break
                assert time.monotonic() - started < 22, "no ping within 22 s"
        elapsed = time.monotonic() - started
        assert 10 <= elapsed <= 22, elapsed  # every 15 s
        assert parse_body(received.split(": ping")[0]) == []  # nothing else came meanwhile
    finally:
        http.post(f"/runs/{run_id}/cancel")
