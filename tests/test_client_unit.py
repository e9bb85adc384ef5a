"""The client's own logic: SSE parsing, error mapping, wait chunks, stream reconnects.

The HTTP side is a tiny FastAPI app of this module served by a real uvicorn (not runcast's
server, which the end-to-end tests drive).
"""

import socket
import threading
import time
from collections import defaultdict

import pytest
import uvicorn
from fastapi import FastAPI, Header, HTTPException, Request
from fastapi.responses import JSONResponse, StreamingResponse

from api.client import (
    AsyncClient,
    Client,
    Conflict,
    InvalidRequest,
    NotFound,
    RuncastClientError,
    ServerUnavailable,
    Unauthorized,
    error_for_status,
)
from api.schemas import BatchRequest, RunRequest
from api.sse_parse import SSEFrame, SSEParser
from streaming.events import Event

# SSE parser

WIRE = (
    b": ping\r\n"
    b'id: 1\r\nevent: token\r\ndata: {"a": 1}\r\n\r\n'
    b"retry: 1500\n"
    b"data:first\ndata:  second\ndata\n\n"
    b"id: 7\revent: custom:x\rdata: caf\xc3\xa9 \xe2\x9c\x93\r\r"
    b"id: 8\n\n"
    b"data: cut off"
)
FRAMES = [
    SSEFrame(data='{"a": 1}', event="token", id="1"),
    SSEFrame(data="first\n second\n", event="message", id="1", retry_ms=1500),
    SSEFrame(data="café ✓", event="custom:x", id="7", retry_ms=1500),
]


def parse(chunks) -> list[SSEFrame]:
    parser = SSEParser()
    frames = [frame for chunk in chunks for frame in parser.feed(chunk)]
    return frames + parser.close()


def test_parser_reads_frames_and_skips_comments():
    assert parse([WIRE]) == FRAMES


def test_parser_is_indifferent_to_chunk_boundaries():
    # byte by byte splits CRLF pairs and the multi-byte UTF-8 characters
    assert parse([WIRE[i : i + 1] for i in range(len(WIRE))]) == FRAMES
    assert parse([WIRE[:5], WIRE[5:40], WIRE[40:]]) == FRAMES


def test_parser_details():
    parser = SSEParser()
    assert parser.feed("\ufeffdata: x\n\n") == [SSEFrame(data="x")]  # BOM dropped
    assert parser.feed("id: 4\n\n") == []  # no data, no frame; the id sticks
    assert parser.last_event_id == "4"
    assert parser.feed("data: y\r") == []  # the CR may start a CRLF
    assert parser.feed("\r\n") == [SSEFrame(data="y", id="4")]
    assert parser.feed("data: z\r") == []
    assert parser.close() == []  # a frame without its blank line is dropped


# Error mapping


@pytest.mark.parametrize(
    ("status", "cls"),
    [(400, InvalidRequest), (401, Unauthorized), (403, Unauthorized), (404, NotFound),
     (409, Conflict), (413, InvalidRequest), (422, InvalidRequest), (418, RuncastClientError),
     (500, ServerUnavailable), (503, ServerUnavailable)],
)  # fmt: skip
def test_error_for_status(status, cls):
    error = error_for_status(status, "why")
    assert type(error) is cls and (error.status_code, error.detail) == (status, "why")


def test_schemas_forbid_unknown_fields():
    with pytest.raises(ValueError):
        RunRequest(agent="echo", inputs={})
    assert RunRequest(agent="echo").input == {}


# A tiny app and a real server

app = FastAPI()
stream_calls: dict[str, list[tuple[int, str | None]]] = defaultdict(list)
wait_calls: dict[str, list[str]] = defaultdict(list)


def frame(run_id: str, seq: int, event_type: str = "token") -> str:
    event = Event(run_id=run_id, seq=seq, type=event_type, ts="2026-01-01T00:00:00Z", data={})
    return f"id: {seq}\nevent: {event_type}\ndata: {event.to_json()}\n\n"


def run_json(run_id: str, status: str = "running") -> dict:
    return {"run_id": run_id, "agent": "echo", "status": status, "created_at": "t"}


@app.get("/runs/{run_id}")
async def get_run(run_id: str):
    if run_id == "boom":
        return JSONResponse({"detail": "redis down"}, status_code=503)
    raise HTTPException(404, "run not found")


@app.get("/runs/{run_id}/wait")
async def wait_run(run_id: str, timeout: int):
    wait_calls[run_id].append(timeout)
    return run_json(run_id, "succeeded" if len(wait_calls[run_id]) == 2 else "running")


@app.post("/runs/{run_id}/cancel")
async def cancel_run(run_id: str):
    raise HTTPException(409, "run already ended")


@app.get("/agents")
async def agents(authorization: str | None = Header(None)):
    if authorization != "Bearer k1":
        raise HTTPException(401, "missing or wrong API key")
    return {"agents": [{"name": "echo"}]}


@app.post("/batches", status_code=202)
async def batches(body: BatchRequest):
    return {"batch_id": "b1", "run_ids": ["r"] * len(body.runs), "total": len(body.runs)}


async def drop_after(run_id: str, seqs):
    for seq in seqs:
        yield frame(run_id, seq)
    raise RuntimeError("connection cut")  # uvicorn closes the socket mid-body


@app.get("/runs/{run_id}/stream")
async def stream_run(run_id: str, request: Request, after: int = 0):
    """First call: up to seq 3, then a cut; second: 503; third: replays from 2 to the end."""
    stream_calls[run_id].append((after, request.headers.get("last-event-id")))
    attempt = len(stream_calls[run_id])
    if attempt == 1:
        return StreamingResponse(drop_after(run_id, range(after + 1, 4)))
    if attempt == 2:
        return JSONResponse({"detail": "restarting"}, status_code=503)
    tail = [frame(run_id, seq) for seq in range(2, 6)] + [
        ": ping\n\n",
        frame(run_id, 6, "complete"),
    ]
    return StreamingResponse(iter(tail), media_type="text/event-stream")


@app.post("/runs/stream")
async def submit_stream(body: RunRequest):
    return StreamingResponse(drop_after("sub", [1, 2]), headers={"X-Run-Id": "sub"})


@pytest.fixture(scope="module")
def url():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="critical", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    server.should_exit = True
    thread.join(5)


def test_errors_carry_status_and_detail(url):
    with Client(url) as client:
        with pytest.raises(NotFound) as caught:
            client.get("missing")
        assert (caught.value.status_code, caught.value.detail) == (404, "run not found")
        with pytest.raises(ServerUnavailable, match="redis down"):
            client.get("boom")
        with pytest.raises(Conflict):
            client.cancel("r1")
        with pytest.raises(Unauthorized):
            client.agents()
        with pytest.raises(InvalidRequest) as caught:
            client.submit_batch([{"agent": "echo", "inputs": {}}])
        assert caught.value.status_code == 422 and isinstance(caught.value.detail, list)
        assert client.submit_batch([RunRequest(agent="echo"), {"agent": "echo"}]).total == 2
    with Client(url, api_key="k1") as client:
        assert client.agents().agents[0].name == "echo"


def test_unreachable_server():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there now
    with Client(f"http://127.0.0.1:{port}") as client, pytest.raises(ServerUnavailable) as caught:
        client.health()
    assert caught.value.status_code is None


async def test_wait_loops_until_terminal(url):
    async with AsyncClient(url) as client:
        assert (await client.wait("w1")).status == "succeeded"
        assert (await client.wait("w2", timeout=2.5)).status == "succeeded"
    assert wait_calls["w1"] == [300, 300] and wait_calls["w2"][0] == 3


def test_stream_reconnects_and_dedupes(url):
    with Client(url) as client, client.stream("s1") as events:
        assert [(e.seq, e.type) for e in events] == [(n, "token") for n in range(1, 6)] + [
            (6, "complete")
        ]
    assert stream_calls["s1"] == [(0, None), (3, "3"), (3, "3")]


async def test_async_submit_stream_resumes_with_the_run_id(url):
    async with AsyncClient(url) as client:
        events = client.submit_stream("echo", {"x": 1})
        seqs = [event.seq async for event in events]
    assert seqs == [1, 2, 3, 4, 5, 6] and events.run_id == "sub"
    assert stream_calls["sub"] == [(2, "2"), (3, "3"), (3, "3")]
