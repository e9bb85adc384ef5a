"""Python client of the runcast HTTP API: `Client` and its twin `AsyncClient`.

Both build their requests in `_BaseClient`; only the I/O differs. Errors:

    RuncastError (streaming.errors)
    └── RuncastClientError      status_code (None when no response came) and detail
        ├── InvalidRequest      400, 413, 422
        ├── Unauthorized        401, 403
        ├── NotFound            404
        ├── Conflict            409
        └── ServerUnavailable   no connection, or 5xx

`stream()` and `submit_stream()` follow a run's events over SSE: after a dropped connection or a
5xx they reconnect with `Last-Event-ID`, backing off, until the terminal event, and yield every
event once, in `seq` order. They give up with `ServerUnavailable` when reconnecting has failed for
`reconnect_timeout` seconds.
"""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Self
from urllib.parse import quote

import anyio
import httpx
from pydantic import BaseModel, ValidationError

from api.schemas import (
    AgentList,
    BatchCreated,
    BatchStatus,
    EventsPage,
    Health,
    Run,
    RunList,
    RunRequest,
)
from api.sse_parse import SSEFrame, SSEParser
from streaming.constants import MAX_WAIT_S
from streaming.errors import RuncastError
from streaming.events import TERMINAL_TYPES, Event

DEFAULT_TIMEOUT_S = 30.0
WAIT_SLACK_S = 30.0  # a wait request may take this long beyond the wait the server was asked for
STREAM_READ_TIMEOUT_S = 60.0  # silence on an SSE stream (pings come every 15 s) that drops it
DEFAULT_RECONNECT_TIMEOUT_S = 60.0  # a stream gives up after reconnecting failed this long
RECONNECT_DELAY_S = 0.1  # first pause before a reconnect; doubles per failure
RECONNECT_DELAY_MAX_S = 5.0
RUN_ID_HEADER = "X-Run-Id"


class RuncastClientError(RuncastError):
    """Raised when the API refused a request or could not be reached."""

    def __init__(self, status_code: int | None, detail: Any) -> None:
        super().__init__(status_code, detail)
        self.status_code = status_code
        self.detail = detail

    def __str__(self) -> str:
        return f"{self.status_code}: {self.detail}" if self.status_code else str(self.detail)


class InvalidRequest(RuncastClientError):
    """Raised when the API rejected the request's body or parameters (400, 413, 422)."""


class Unauthorized(RuncastClientError):
    """Raised when the API key (or stream token) is missing or wrong (401, 403)."""


class NotFound(RuncastClientError):
    """Raised when the run, batch or agent does not exist (404)."""


class Conflict(RuncastClientError):
    """Raised when the run's state forbids the request, or an idempotency key was reused (409)."""


class ServerUnavailable(RuncastClientError):
    """Raised when the API could not be reached or answered with a 5xx."""


_STATUS_ERRORS: dict[int, type[RuncastClientError]] = {
    400: InvalidRequest,
    413: InvalidRequest,
    422: InvalidRequest,
    401: Unauthorized,
    403: Unauthorized,
    404: NotFound,
    409: Conflict,
}


def error_for_status(status_code: int, detail: Any) -> RuncastClientError:
    cls = _STATUS_ERRORS.get(status_code)
    if cls is None:
        cls = ServerUnavailable if status_code >= 500 else RuncastClientError
    return cls(status_code, detail)


def error_from_response(response: httpx.Response) -> RuncastClientError:
    """The exception for an error response (read it first when it was streamed)."""
    try:
        body = response.json()
    except ValueError:
        body = response.text or response.reason_phrase
    detail = body.get("detail", body) if isinstance(body, dict) else body
    return error_for_status(response.status_code, detail)


def _unreachable(exc: httpx.TransportError) -> ServerUnavailable:
    return ServerUnavailable(None, f"{type(exc).__name__}: {exc}".rstrip(": "))


def _path(*parts: str) -> str:
    return "/" + "/".join(quote(part, safe="") for part in parts)


def _deadline(timeout: float | None) -> float | None:
    return None if timeout is None else time.monotonic() + timeout


def _wait_chunk_s(deadline: float | None) -> int:
    """Seconds to ask GET /wait for: whole (the route may take an int), at most MAX_WAIT_S."""
    if deadline is None:
        return MAX_WAIT_S
    return max(0, min(MAX_WAIT_S, math.ceil(deadline - time.monotonic())))


def _expired(deadline: float | None) -> bool:
    return deadline is not None and time.monotonic() >= deadline


def _event_from_frame(frame: SSEFrame) -> Event:
    try:
        return Event.model_validate_json(frame.data)
    except ValidationError as exc:
        try:
            body = json.loads(frame.data)
        except ValueError:
            body = frame.data
        detail = body.get("detail", body) if isinstance(body, dict) else body
        raise RuncastClientError(None, f"not a runcast event ({frame.event}): {detail}") from exc


@dataclass(frozen=True, slots=True)
class _Call:
    """One request and the model its answer becomes (None: the raw JSON)."""

    method: str
    path: str
    model: type[BaseModel] | None = None
    params: dict[str, Any] | None = None
    json: Any = None
    timeout: httpx.Timeout | None = None

    def parse(self, response: httpx.Response) -> Any:
        if response.is_error:
            raise error_from_response(response)
        body = response.json()
        return body if self.model is None else self.model.model_validate(body)


@dataclass(slots=True)
class _Resume:
    """Where a followed stream stands: last seq yielded, terminal seen, reconnect backoff."""

    last_seq: int
    reconnect_timeout: float | None
    done: bool = False
    connections: int = 0
    failures: int = 0
    failing_since: float | None = None
    parser: SSEParser = field(default_factory=SSEParser)

    def connecting(self) -> None:
        self.connections += 1
        retry_ms = self.parser.retry_ms
        self.parser = SSEParser()
        self.parser.retry_ms = retry_ms

    def request(self, run_id: str, timeout: httpx.Timeout) -> _Call:
        self.connecting()
        return _Call(
            "GET", _path("runs", run_id, "stream"), params={"after": self.last_seq}, timeout=timeout
        )

    def headers(self) -> dict[str, str]:
        headers = {"Accept": "text/event-stream"}
        if self.connections > 1:
            headers["Last-Event-ID"] = str(self.last_seq)
        return headers

    def connected(self) -> None:
        self.failing_since = None

    def accept(self, frame: SSEFrame) -> Event | None:
        """The frame's event when it is new, else None (a replayed duplicate)."""
        event = _event_from_frame(frame)
        if self.done or event.seq <= self.last_seq:
            return None
        self.last_seq = event.seq
        self.failures = 0
        self.done = event.type in TERMINAL_TYPES
        return event

    def failed(self, cause: Exception) -> float:
        """Note a failed or dropped connection: the pause before the next, or raise when spent."""
        now = time.monotonic()
        if self.failing_since is None:
            self.failing_since = now
        elif (
            self.reconnect_timeout is not None and now - self.failing_since > self.reconnect_timeout
        ):
            if isinstance(cause, RuncastClientError):
                raise cause
            raise ServerUnavailable(None, f"stream lost: {cause}") from cause
        base = (self.parser.retry_ms / 1000) if self.parser.retry_ms else RECONNECT_DELAY_S
        delay = min(RECONNECT_DELAY_MAX_S, base * 2**self.failures)
        self.failures += 1
        return delay * random.uniform(0.5, 1.0)


def _retryable(response: httpx.Response) -> RuncastClientError:
    """The error of a failed stream request; raised unless a reconnect may cure it (5xx)."""
    error = error_from_response(response)
    if not isinstance(error, ServerUnavailable):
        raise error
    return error


class _Dropped(Exception):
    """A stream ended before its terminal event."""


class EventStream(Iterator[Event]):
    """Events of one run; `run_id` is known once the response headers or an event came."""

    def __init__(self, body: Callable[[EventStream], Iterator[Event]], run_id: str | None = None):
        self.run_id = run_id
        self._events = body(self)

    def __next__(self) -> Event:
        return next(self._events)

    def close(self) -> None:
        self._events.close()  # type: ignore[attr-defined]

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class AsyncEventStream(AsyncIterator[Event]):
    """The async twin of `EventStream`."""

    def __init__(
        self, body: Callable[[AsyncEventStream], AsyncIterator[Event]], run_id: str | None = None
    ):
        self.run_id = run_id
        self._events = body(self)

    async def __anext__(self) -> Event:
        return await self._events.__anext__()

    async def aclose(self) -> None:
        await self._events.aclose()  # type: ignore[attr-defined]

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


class _BaseClient:
    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        timeout: float | httpx.Timeout | None = DEFAULT_TIMEOUT_S,
        *,
        reconnect_timeout: float | None = DEFAULT_RECONNECT_TIMEOUT_S,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout if isinstance(timeout, httpx.Timeout) else httpx.Timeout(timeout)
        self.reconnect_timeout = reconnect_timeout
        self.headers = {"Accept": "application/json", "User-Agent": "runcast-client"}
        if api_key:
            self.headers["Authorization"] = f"Bearer {api_key}"

    def _timeout_with_read(self, read: float) -> httpx.Timeout:
        t = self.timeout
        return httpx.Timeout(
            connect=t.connect,
            read=None if t.read is None else max(t.read, read),
            write=t.write,
            pool=t.pool,
        )

    def _resume(self, after: int) -> _Resume:
        return _Resume(last_seq=after, reconnect_timeout=self.reconnect_timeout)

    def _stream_timeout(self) -> httpx.Timeout:
        return self._timeout_with_read(STREAM_READ_TIMEOUT_S)

    @staticmethod
    def _run_body(
        agent: str,
        input: Any,
        events: str | list[str] | None,
        timeout: float | None,
        metadata: dict[str, Any] | None,
        idempotency_key: str | None,
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"agent": agent, "input": {} if input is None else input}
        options = {
            "events": events,
            "timeout": timeout,
            "metadata": metadata,
            "idempotency_key": idempotency_key,
        }
        body.update((key, value) for key, value in options.items() if value is not None)
        return body

    def _submit(self, *args: Any) -> _Call:
        return _Call("POST", "/runs", Run, json=self._run_body(*args))

    def _submit_stream(self, *args: Any) -> _Call:
        return _Call(
            "POST", "/runs/stream", json=self._run_body(*args), timeout=self._stream_timeout()
        )

    def _get(self, run_id: str) -> _Call:
        return _Call("GET", _path("runs", run_id), Run)

    def _wait(self, run_id: str, chunk_s: int) -> _Call:
        return _Call(
            "GET",
            _path("runs", run_id, "wait"),
            Run,
            params={"timeout": chunk_s},
            timeout=self._timeout_with_read(chunk_s + WAIT_SLACK_S),
        )

    def _events(self, run_id: str, after: int, limit: int) -> _Call:
        params = {"after": after, "limit": limit}
        return _Call("GET", _path("runs", run_id, "events"), EventsPage, params=params)

    def _cancel(self, run_id: str, reason: str | None) -> _Call:
        return _Call("POST", _path("runs", run_id, "cancel"), Run, json={"reason": reason})

    def _list_runs(
        self,
        status: str | None,
        agent: str | None,
        batch_id: str | None,
        limit: int,
        cursor: str | None,
    ) -> _Call:
        params = {
            "status": status,
            "agent": agent,
            "batch_id": batch_id,
            "limit": limit,
            "cursor": cursor,
        }
        params = {key: value for key, value in params.items() if value is not None}
        return _Call("GET", "/runs", RunList, params=params)

    def _submit_batch(
        self, runs: list[dict[str, Any] | RunRequest], metadata: dict[str, Any] | None
    ) -> _Call:
        items = [
            run.model_dump(mode="json") if isinstance(run, RunRequest) else run for run in runs
        ]
        return _Call(
            "POST", "/batches", BatchCreated, json={"runs": items, "metadata": metadata or {}}
        )

    def _batch(self, batch_id: str) -> _Call:
        return _Call("GET", _path("batches", batch_id), BatchStatus)

    def _cancel_batch(self, batch_id: str) -> _Call:
        return _Call("POST", _path("batches", batch_id, "cancel"))

    @staticmethod
    def _batch_status_or_raw(body: Any) -> BatchStatus | Any:
        try:
            return BatchStatus.model_validate(body)
        except ValidationError:
            return body

    def _agents(self) -> _Call:
        return _Call("GET", "/agents", AgentList)

    def _health(self) -> _Call:
        return _Call("GET", "/healthz", Health)


class Client(_BaseClient):
    """Blocking client: `with Client("http://localhost:8000", api_key=...) as client: ...`."""

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        timeout: float | httpx.Timeout | None = DEFAULT_TIMEOUT_S,
        *,
        reconnect_timeout: float | None = DEFAULT_RECONNECT_TIMEOUT_S,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        super().__init__(base_url, api_key, timeout, reconnect_timeout=reconnect_timeout)
        self._http = httpx.Client(
            base_url=self.base_url, headers=self.headers, timeout=self.timeout, transport=transport
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _open(self, call: _Call, headers: dict[str, str] | None = None, stream: bool = False):
        request = self._http.build_request(
            call.method,
            call.path,
            params=call.params,
            json=call.json,
            headers=headers,
            timeout=call.timeout or httpx.USE_CLIENT_DEFAULT,
        )
        try:
            return self._http.send(request, stream=stream)
        except httpx.TransportError as exc:
            raise _unreachable(exc) from exc

    def _send(self, call: _Call) -> Any:
        return call.parse(self._open(call))

    def submit(
        self,
        agent: str,
        input: Any = None,
        *,
        events: str | list[str] | None = None,
        timeout: float | None = None,
        metadata: dict[str, Any] | None = None,
        idempotency_key: str | None = None,
    ) -> Run:
        return self._send(self._submit(agent, input, events, timeout, metadata, idempotency_key))

    def get(self, run_id: str) -> Run:
        return self._send(self._get(run_id))

    def wait(self, run_id: str, timeout: float | None = None) -> Run:
        """The run once terminal, or as it is when `timeout` seconds (None: no limit) passed."""
        deadline = _deadline(timeout)
        while True:
            run: Run = self._send(self._wait(run_id, _wait_chunk_s(deadline)))
            if run.is_terminal or _expired(deadline):
                return run

    def events(self, run_id: str, after: int = 0, limit: int = 1000) -> EventsPage:
        return self._send(self._events(run_id, after, limit))

    def cancel(self, run_id: str, reason: str | None = None) -> Run:
        return self._send(self._cancel(run_id, reason))

    def list_runs(
        self,
        status: str | None = None,
        agent: str | None = None,
        batch_id: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> RunList:
        return self._send(self._list_runs(status, agent, batch_id, limit, cursor))

    def submit_batch(
        self, runs: list[dict[str, Any] | RunRequest], metadata: dict[str, Any] | None = None
    ) -> BatchCreated:
        return self._send(self._submit_batch(runs, metadata))

    def batch(self, batch_id: str) -> BatchStatus:
        return self._send(self._batch(batch_id))

    def cancel_batch(self, batch_id: str) -> BatchStatus | Any:
        return self._batch_status_or_raw(self._send(self._cancel_batch(batch_id)))

    def agents(self) -> AgentList:
        return self._send(self._agents())

    def health(self) -> Health:
        return self._send(self._health())

    def stream(self, run_id: str, after: int = 0) -> EventStream:
        """The run's events after `after`, live, until the terminal one."""
        return EventStream(lambda _: self._follow(run_id, self._resume(after)), run_id)

    def submit_stream(
        self,
        agent: str,
        input: Any = None,
        *,
        events: str | list[str] | None = None,
        timeout: float | None = None,
        metadata: dict[str, Any] | None = None,
        idempotency_key: str | None = None,
    ) -> EventStream:
        """Submit a run and follow its events; the stream's `run_id` is set once known."""
        call = self._submit_stream(agent, input, events, timeout, metadata, idempotency_key)
        return EventStream(lambda holder: self._submit_and_follow(call, holder))

    def _submit_and_follow(self, call: _Call, holder: EventStream) -> Iterator[Event]:
        state = self._resume(0)
        state.connecting()
        response = self._open(call, {"Accept": "text/event-stream"}, stream=True)
        try:
            if response.is_error:
                response.read()
                raise error_from_response(response)
            holder.run_id = response.headers.get(RUN_ID_HEADER)
            for chunk in response.iter_bytes():
                for frame in state.parser.feed(chunk):
                    if (event := state.accept(frame)) is not None:
                        holder.run_id = holder.run_id or event.run_id
                        yield event
                    if state.done:
                        return
        except httpx.TransportError:
            pass  # dropped: follow the run below
        finally:
            response.close()
        if holder.run_id is None:
            raise ServerUnavailable(None, "the stream ended before the run id was known")
        yield from self._follow(holder.run_id, state)

    def _follow(self, run_id: str, state: _Resume) -> Iterator[Event]:
        while not state.done:
            call = state.request(run_id, self._stream_timeout())
            try:
                response = self._open(call, state.headers(), stream=True)
            except ServerUnavailable as exc:
                time.sleep(state.failed(exc))
                continue
            cause: Exception
            try:
                if response.is_error:
                    response.read()
                    cause = _retryable(response)
                else:
                    state.connected()
                    for chunk in response.iter_bytes():
                        for frame in state.parser.feed(chunk):
                            if (event := state.accept(frame)) is not None:
                                yield event
                            if state.done:
                                return
                    cause = _Dropped("the stream ended before the terminal event")
            except httpx.TransportError as exc:
                cause = exc
            finally:
                response.close()
            time.sleep(state.failed(cause))


class AsyncClient(_BaseClient):
    """The async twin of `Client`: `async with AsyncClient(url) as client: ...`."""

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        timeout: float | httpx.Timeout | None = DEFAULT_TIMEOUT_S,
        *,
        reconnect_timeout: float | None = DEFAULT_RECONNECT_TIMEOUT_S,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        super().__init__(base_url, api_key, timeout, reconnect_timeout=reconnect_timeout)
        self._http = httpx.AsyncClient(
            base_url=self.base_url, headers=self.headers, timeout=self.timeout, transport=transport
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def _open(self, call: _Call, headers: dict[str, str] | None = None, stream: bool = False):
        request = self._http.build_request(
            call.method,
            call.path,
            params=call.params,
            json=call.json,
            headers=headers,
            timeout=call.timeout or httpx.USE_CLIENT_DEFAULT,
        )
        try:
            return await self._http.send(request, stream=stream)
        except httpx.TransportError as exc:
            raise _unreachable(exc) from exc

    async def _send(self, call: _Call) -> Any:
        return call.parse(await self._open(call))

    async def submit(
        self,
        agent: str,
        input: Any = None,
        *,
        events: str | list[str] | None = None,
        timeout: float | None = None,
        metadata: dict[str, Any] | None = None,
        idempotency_key: str | None = None,
    ) -> Run:
        call = self._submit(agent, input, events, timeout, metadata, idempotency_key)
        return await self._send(call)

    async def get(self, run_id: str) -> Run:
        return await self._send(self._get(run_id))

    async def wait(self, run_id: str, timeout: float | None = None) -> Run:
        """The run once terminal, or as it is when `timeout` seconds (None: no limit) passed."""
        deadline = _deadline(timeout)
        while True:
            run: Run = await self._send(self._wait(run_id, _wait_chunk_s(deadline)))
            if run.is_terminal or _expired(deadline):
                return run

    async def events(self, run_id: str, after: int = 0, limit: int = 1000) -> EventsPage:
        return await self._send(self._events(run_id, after, limit))

    async def cancel(self, run_id: str, reason: str | None = None) -> Run:
        return await self._send(self._cancel(run_id, reason))

    async def list_runs(
        self,
        status: str | None = None,
        agent: str | None = None,
        batch_id: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> RunList:
        return await self._send(self._list_runs(status, agent, batch_id, limit, cursor))

    async def submit_batch(
        self, runs: list[dict[str, Any] | RunRequest], metadata: dict[str, Any] | None = None
    ) -> BatchCreated:
        return await self._send(self._submit_batch(runs, metadata))

    async def batch(self, batch_id: str) -> BatchStatus:
        return await self._send(self._batch(batch_id))

    async def cancel_batch(self, batch_id: str) -> BatchStatus | Any:
        return self._batch_status_or_raw(await self._send(self._cancel_batch(batch_id)))

    async def agents(self) -> AgentList:
        return await self._send(self._agents())

    async def health(self) -> Health:
        return await self._send(self._health())

    def stream(self, run_id: str, after: int = 0) -> AsyncEventStream:
        """The run's events after `after`, live, until the terminal one."""
        return AsyncEventStream(lambda _: self._follow(run_id, self._resume(after)), run_id)

    def submit_stream(
        self,
        agent: str,
        input: Any = None,
        *,
        events: str | list[str] | None = None,
        timeout: float | None = None,
        metadata: dict[str, Any] | None = None,
        idempotency_key: str | None = None,
    ) -> AsyncEventStream:
        """Submit a run and follow its events; the stream's `run_id` is set once known."""
        call = self._submit_stream(agent, input, events, timeout, metadata, idempotency_key)
        return AsyncEventStream(lambda holder: self._submit_and_follow(call, holder))

    async def _submit_and_follow(
        self, call: _Call, holder: AsyncEventStream
    ) -> AsyncIterator[Event]:
        state = self._resume(0)
        state.connecting()
        response = await self._open(call, {"Accept": "text/event-stream"}, stream=True)
        try:
            if response.is_error:
                await response.aread()
                raise error_from_response(response)
            holder.run_id = response.headers.get(RUN_ID_HEADER)
            async for chunk in response.aiter_bytes():
                for frame in state.parser.feed(chunk):
                    if (event := state.accept(frame)) is not None:
                        holder.run_id = holder.run_id or event.run_id
                        yield event
                    if state.done:
                        return
        except httpx.TransportError:
            pass  # dropped: follow the run below
        finally:
            await response.aclose()
        if holder.run_id is None:
            raise ServerUnavailable(None, "the stream ended before the run id was known")
        async for event in self._follow(holder.run_id, state):
            yield event

    async def _follow(self, run_id: str, state: _Resume) -> AsyncIterator[Event]:
        while not state.done:
            call = state.request(run_id, self._stream_timeout())
            try:
                response = await self._open(call, state.headers(), stream=True)
            except ServerUnavailable as exc:
                await anyio.sleep(state.failed(exc))
                continue
            cause: Exception
            try:
                if response.is_error:
                    await response.aread()
                    cause = _retryable(response)
                else:
                    state.connected()
                    async for chunk in response.aiter_bytes():
                        for frame in state.parser.feed(chunk):
                            if (event := state.accept(frame)) is not None:
                                yield event
                            if state.done:
                                return
                    cause = _Dropped("the stream ended before the terminal event")
            except httpx.TransportError as exc:
                cause = exc
            finally:
                await response.aclose()
            await anyio.sleep(state.failed(cause))
