"""Python client of the runcast HTTP API: `Client` and its twin `AsyncClient`.

Both build their requests in `_BaseClient` (`api.client_base`); only the I/O differs. Errors are
`RuncastClientError` and its subclasses by status (`InvalidRequest`, `Unauthorized`, `NotFound`,
`Conflict`, `ServerUnavailable`), defined in `api.client_errors` and importable from here.

`stream()` and `submit_stream()` follow a run's events over SSE: after a dropped connection or a
5xx they reconnect with `Last-Event-ID`, backing off, until the terminal event, and yield every
event once, in `seq` order. They give up with `ServerUnavailable` when reconnecting has failed for
`reconnect_timeout` seconds.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from typing import Any, Self

import anyio
import httpx

from api.client_base import (
    DEFAULT_RECONNECT_TIMEOUT_S,
    DEFAULT_TIMEOUT_S,
    RECONNECT_DELAY_MAX_S,
    RECONNECT_DELAY_S,
    RUN_ID_HEADER,
    STREAM_READ_TIMEOUT_S,
    WAIT_SLACK_S,
    AsyncEventStream,
    EventStream,
    _BaseClient,
    _Call,
    _deadline,
    _expired,
    _Resume,
)
from api.client_batches import AsyncBatchMethods, BatchMethods
from api.client_errors import (
    Conflict,
    InvalidRequest,
    NotFound,
    RuncastClientError,
    ServerUnavailable,
    Unauthorized,
    _retryable,
    _unreachable,
    error_for_status,
    error_from_response,
)
from api.schemas import (
    AgentList,
    BatchCreated,
    BatchFrame,
    BatchResult,
    BatchStatus,
    EventsPage,
    Health,
    Run,
    RunList,
    RunRequest,
)
from streaming.events import Event

__all__ = [
    "DEFAULT_RECONNECT_TIMEOUT_S",
    "DEFAULT_TIMEOUT_S",
    "RECONNECT_DELAY_MAX_S",
    "RECONNECT_DELAY_S",
    "RUN_ID_HEADER",
    "STREAM_READ_TIMEOUT_S",
    "WAIT_SLACK_S",
    "AsyncClient",
    "AsyncEventStream",
    "BatchFrame",
    "BatchResult",
    "Client",
    "Conflict",
    "EventStream",
    "InvalidRequest",
    "NotFound",
    "RuncastClientError",
    "ServerUnavailable",
    "Unauthorized",
    "error_for_status",
    "error_from_response",
]


class Client(BatchMethods, _BaseClient):
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
        self._http = httpx.Client(**self._http_options(), transport=transport)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _open(
        self, call: _Call, headers: dict[str, str] | None = None, stream: bool = False
    ) -> httpx.Response:
        try:
            return self._http.send(call.build(self._http, headers), stream=stream)
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
        webhook: str | None = None,
    ) -> Run:
        return self._send(self._submit(agent, input, events, timeout, metadata, idempotency_key,
                                       webhook))

    def get(self, run_id: str) -> Run:
        return self._send(self._get(run_id))

    def wait(self, run_id: str, timeout: float | None = None) -> Run:
        """The run once terminal, or as it is when `timeout` seconds (None: no limit) passed."""
        deadline = _deadline(timeout)
        while True:
            run: Run = self._send(self._wait(run_id, deadline))
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
        self,
        runs: list[dict[str, Any] | RunRequest],
        metadata: dict[str, Any] | None = None,
        *,
        webhook: str | None = None,
    ) -> BatchCreated:
        return self._send(self._submit_batch(runs, metadata, webhook))

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
        webhook: str | None = None,
    ) -> EventStream:
        """Submit a run and follow its events; the stream's `run_id` is set once known."""
        call = self._submit_stream(agent, input, events, timeout, metadata,
                                   idempotency_key, webhook)
        return EventStream(lambda holder: self._submit_and_follow(call, holder))

    def _submit_and_follow(self, call: _Call, holder: EventStream) -> Iterator[Event]:
        state = self._resume_submitted()
        response = self._open(call, state.headers(), stream=True)
        try:
            if response.is_error:
                response.read()
                raise error_from_response(response)
            holder.run_id = response.headers.get(RUN_ID_HEADER)
            for chunk in response.iter_bytes():
                for event in state.feed(chunk):
                    holder.run_id = holder.run_id or event.run_id
                    yield event
                if state.done:
                    return
        except httpx.TransportError:
            pass  # dropped: follow the run below
        finally:
            response.close()
        yield from self._follow(self._run_id_to_follow(holder.run_id), state)

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
                        yield from state.feed(chunk)
                        if state.done:
                            return
                    cause = state.dropped()
            except httpx.TransportError as exc:
                cause = exc
            finally:
                response.close()
            time.sleep(state.failed(cause))


class AsyncClient(AsyncBatchMethods, _BaseClient):
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
        self._http = httpx.AsyncClient(**self._http_options(), transport=transport)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def _open(
        self, call: _Call, headers: dict[str, str] | None = None, stream: bool = False
    ) -> httpx.Response:
        try:
            return await self._http.send(call.build(self._http, headers), stream=stream)
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
        webhook: str | None = None,
    ) -> Run:
        call = self._submit(agent, input, events, timeout, metadata, idempotency_key,
                                       webhook)
        return await self._send(call)

    async def get(self, run_id: str) -> Run:
        return await self._send(self._get(run_id))

    async def wait(self, run_id: str, timeout: float | None = None) -> Run:
        """The run once terminal, or as it is when `timeout` seconds (None: no limit) passed."""
        deadline = _deadline(timeout)
        while True:
            run: Run = await self._send(self._wait(run_id, deadline))
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
        self,
        runs: list[dict[str, Any] | RunRequest],
        metadata: dict[str, Any] | None = None,
        *,
        webhook: str | None = None,
    ) -> BatchCreated:
        return await self._send(self._submit_batch(runs, metadata, webhook))

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
        webhook: str | None = None,
    ) -> AsyncEventStream:
        """Submit a run and follow its events; the stream's `run_id` is set once known."""
        call = self._submit_stream(agent, input, events, timeout, metadata,
                                   idempotency_key, webhook)
        return AsyncEventStream(lambda holder: self._submit_and_follow(call, holder))

    async def _submit_and_follow(
        self, call: _Call, holder: AsyncEventStream
    ) -> AsyncIterator[Event]:
        state = self._resume_submitted()
        response = await self._open(call, state.headers(), stream=True)
        try:
            if response.is_error:
                await response.aread()
                raise error_from_response(response)
            holder.run_id = response.headers.get(RUN_ID_HEADER)
            async for chunk in response.aiter_bytes():
                for event in state.feed(chunk):
                    holder.run_id = holder.run_id or event.run_id
                    yield event
                if state.done:
                    return
        except httpx.TransportError:
            pass  # dropped: follow the run below
        finally:
            await response.aclose()
        async for event in self._follow(self._run_id_to_follow(holder.run_id), state):
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
                        for event in state.feed(chunk):
                            yield event
                        if state.done:
                            return
                    cause = state.dropped()
            except httpx.TransportError as exc:
                cause = exc
            finally:
                await response.aclose()
            await anyio.sleep(state.failed(cause))
