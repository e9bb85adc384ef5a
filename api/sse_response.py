"""A lean SSE response for streams whose body iterator yields ready bytes and its own pings.

sse-starlette's EventSourceResponse runs four tasks per stream (body, ping, shutdown watch,
disconnect watch) and a cancel scope per send. With hundreds of clients on one run that is most of
the API's work per connection. This response keeps its headers and rules (a send that waits longer
than `send_timeout` ends the stream with SendTimeoutError; the stream ends when the client leaves
or the server shuts down) with one extra task per stream: the disconnect watch. One watcher per
event loop ends every stream at shutdown.
"""

from __future__ import annotations

import asyncio
import logging

from sse_starlette import EventSourceResponse
from sse_starlette.sse import AppStatus, SendTimeoutError
from starlette.types import Receive, Scope, Send

log = logging.getLogger(__name__)

SHUTDOWN_POLL_S = 0.5

_streams: dict[asyncio.AbstractEventLoop, set[asyncio.Task]] = {}


def _uvicorn_should_exit() -> bool:
    try:
        from sse_starlette.sse import _get_uvicorn_server  # the server behind SIGTERM, if any

        server = _get_uvicorn_server()
    except Exception:  # noqa: BLE001 - without uvicorn there is nothing to watch
        return False
    return bool(server is not None and server.should_exit)


async def _watch_shutdown(loop: asyncio.AbstractEventLoop, tasks: set[asyncio.Task]) -> None:
    try:
        while tasks:
            if AppStatus.should_exit or _uvicorn_should_exit():
                for task in list(tasks):
                    task.cancel()
                return
            await asyncio.sleep(SHUTDOWN_POLL_S)
    finally:
        if _streams.get(loop) is tasks and not tasks:
            del _streams[loop]


def _register(task: asyncio.Task) -> None:
    loop = asyncio.get_running_loop()
    tasks = _streams.get(loop)
    if tasks is None:
        tasks = _streams[loop] = set()
        tasks.add(task)
        loop.create_task(_watch_shutdown(loop, tasks))
    else:
        tasks.add(task)


def _unregister(task: asyncio.Task) -> None:
    tasks = _streams.get(asyncio.get_running_loop())
    if tasks is not None:
        tasks.discard(task)


class BytesEventSourceResponse(EventSourceResponse):
    """EventSourceResponse for a body of ready SSE bytes (frames and pings made by the body)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"].upper() == "HEAD":
            await super().__call__(scope, receive, send)
            return
        task = asyncio.current_task()
        left = False

        async def watch_disconnect() -> None:
            nonlocal left
            while (await receive())["type"] != "http.disconnect":
                pass
            left = True
            task.cancel()

        watcher = asyncio.create_task(watch_disconnect())
        _register(task)
        body = self.body_iterator
        try:
            await send({"type": "http.response.start", "status": self.status_code,
                        "headers": self.raw_headers})
            async for chunk in body:
                try:
                    async with asyncio.timeout(self.send_timeout):
                        await send({"type": "http.response.body", "body": chunk,
                                    "more_body": True})
                except TimeoutError:
                    raise SendTimeoutError() from None
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except asyncio.CancelledError:
            if not left and not (AppStatus.should_exit or _uvicorn_should_exit()):
                raise
            task.uncancel()  # the client left, or the server is shutting down: a normal end
        finally:
            _unregister(task)
            watcher.cancel()
            try:
                await body.aclose()
            except asyncio.CancelledError:  # the client left just as the stream ended
                if not left:
                    raise
                task.uncancel()
            except Exception:  # the stream is over either way
                log.debug("closing an SSE body failed", exc_info=True)
        if self.background is not None:
            await self.background()
