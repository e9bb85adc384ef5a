"""api.sse.coalesced: the batch stream's sender (frames waiting go out together, pings when
quiet, errors in order, the source closed when the client leaves). Pure asyncio."""

from __future__ import annotations

import asyncio

import pytest

import api.sse
from api.fanout import PING_FRAME
from api.sse import coalesced, sse_frame


def test_a_frame_is_what_sse_starlette_writes():
    from sse_starlette import ServerSentEvent

    for data in ('{"a":1}', "two\nlines", "cr\rhere"):
        assert sse_frame(7, "run", data) == ServerSentEvent(data=data, event="run", id="7").encode()


async def test_frames_waiting_go_out_together_in_order():
    ready = asyncio.Event()

    async def source():
        for i in range(1, 6):
            yield sse_frame(i, "run", "{}")
        await ready.wait()  # the rest come later
        for i in range(6, 9):
            yield sse_frame(i, "run", "{}")

    chunks = []
    async for chunk in coalesced(source()):
        chunks.append(chunk)
        ready.set()
    assert b"".join(chunks) == b"".join(sse_frame(i, "run", "{}") for i in range(1, 9))
    assert len(chunks) < 8  # at least one send carried several frames


async def test_a_quiet_stream_gets_pings(monkeypatch):
    monkeypatch.setattr(api.sse, "PING_S", 0.05)
    release = asyncio.Event()

    async def source():
        await release.wait()
        yield sse_frame(1, "done", "{}")

    got = []
    async for chunk in coalesced(source()):
        got.append(chunk)
        if chunk == PING_FRAME and got.count(PING_FRAME) == 2:
            release.set()
    assert got[:2] == [PING_FRAME, PING_FRAME] and got[-1] == sse_frame(1, "done", "{}")


async def test_an_error_comes_after_the_frames_before_it():
    async def source():
        yield sse_frame(1, "run", "{}")
        raise ConnectionError("redis went away")

    got = []
    with pytest.raises(ConnectionError, match="went away"):
        async for chunk in coalesced(source()):
            got.append(chunk)
    assert got == [sse_frame(1, "run", "{}")]


async def test_a_client_that_leaves_closes_the_source():
    closed = asyncio.Event()

    async def source():
        try:
            i = 0
            while True:
                i += 1
                yield sse_frame(i, "run", "{}")
                await asyncio.sleep(0.001)
        finally:
            closed.set()

    stream = coalesced(source())
    assert (await anext(stream)).startswith(b"id: 1\r\n")
    await stream.aclose()
    assert closed.is_set()
