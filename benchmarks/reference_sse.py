"""The fan-out benchmark's baseline: a minimal SSE server serving frames from memory.

    python -m benchmarks.reference_sse PORT FRAMES_FILE

One uvicorn process with a bare ASGI app (no framework, no Redis). FRAMES_FILE holds the SSE
frames of a real run (bytes, one after another, each ending with a blank line). `POST /start`
starts the clock: frame i is published at start + i * INTERVAL_S, as a live run emits them.
`GET /stream` sends every frame published so far in one write, then each new batch as it is
published, and ends after the last frame: the same frames, the same schedule, the same clients
as runcast's stream, with nothing between memory and the socket.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from datetime import datetime

import uvicorn

FRAME_END = b"\r\n\r\n"


class Reference:
    def __init__(self, frames: list[bytes]) -> None:
        self.frames = frames
        self.offsets_s = emit_offsets(frames)
        self.published = 0
        self.changed = asyncio.Event()
        self.clock: asyncio.Task | None = None

    async def _publish(self) -> None:
        started = time.monotonic()
        for i, offset in enumerate(self.offsets_s, 1):
            delay = started + offset - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            self.published = i
            changed, self.changed = self.changed, asyncio.Event()
            changed.set()

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        if scope["path"] == "/start":
            if self.clock is None:
                self.clock = asyncio.create_task(self._publish())
            await send({"type": "http.response.start", "status": 204, "headers": []})
            await send({"type": "http.response.body", "body": b""})
            return
        if scope["path"] != "/stream":
            await send({"type": "http.response.start", "status": 404, "headers": []})
            await send({"type": "http.response.body", "body": b""})
            return
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/event-stream; charset=utf-8"),
                                (b"cache-control", b"no-cache")]})
        position = 0
        while position < len(self.frames):
            available = self.published
            if position < available:
                body = b"".join(self.frames[position:available])
                position = available
                await send({"type": "http.response.body", "body": body, "more_body": True})
            else:
                await self.changed.wait()
        await send({"type": "http.response.body", "body": b""})


def split_frames(data: bytes) -> list[bytes]:
    return [part + FRAME_END for part in data.split(FRAME_END) if part]


def emit_offsets(frames: list[bytes]) -> list[float]:
    """Seconds from the first frame's emit to each frame's (the envelopes' `ts`)."""
    stamps = []
    for frame in frames:
        data = frame.split(b"data: ", 1)[1].split(b"\r\n", 1)[0]
        stamps.append(datetime.fromisoformat(json.loads(data)["ts"]).timestamp())
    return [stamp - stamps[0] for stamp in stamps]


def main() -> None:
    port, path = int(sys.argv[1]), sys.argv[2]
    with open(path, "rb") as file:
        frames = split_frames(file.read())
    uvicorn.run(Reference(frames), host="127.0.0.1", port=port, log_level="warning",
                lifespan="on")


if __name__ == "__main__":
    main()
