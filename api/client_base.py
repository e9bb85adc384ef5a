"""What `Client` and `AsyncClient` (`api.client`) share: request building (`_Call`,
`_BaseClient`), the state of a reconnecting SSE stream (`_Resume`) and the stream classes."""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Self
from urllib.parse import quote

import httpx
from pydantic import BaseModel, ValidationError

from api.client_errors import RuncastClientError, ServerUnavailable, error_from_response
from api.constants import MAX_WAIT_S
from api.schemas import (
    AgentList,
    BatchCreated,
    BatchFrame,
    BatchResults,
    BatchStatus,
    EventsPage,
    Health,
    Run,
    RunList,
    RunRequest,
)
from api.sse_parse import SSEFrame, SSEParser
from streaming.events import TERMINAL_TYPES, Event

DEFAULT_TIMEOUT_S = 30.0
WAIT_SLACK_S = 30.0  # a wait request may take this long beyond the wait the server was asked for
STREAM_READ_TIMEOUT_S = 60.0  # silence on an SSE stream (pings come every 15 s) that drops it
DEFAULT_RECONNECT_TIMEOUT_S = 60.0  # a stream gives up after reconnecting failed this long
RECONNECT_DELAY_S = 0.1  # first pause before a reconnect; doubles per failure
RECONNECT_DELAY_MAX_S = 5.0
RUN_ID_HEADER = "X-Run-Id"


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

    def build(
        self, http: httpx.Client | httpx.AsyncClient, headers: dict[str, str] | None
    ) -> httpx.Request:
        return http.build_request(
            self.method,
            self.path,
            params=self.params,
            json=self.json,
            headers=headers,
            timeout=self.timeout or httpx.USE_CLIENT_DEFAULT,
        )

    def parse(self, response: httpx.Response) -> Any:
        if response.is_error:
            raise error_from_response(response)
        body = response.json()
        return body if self.model is None else self.model.model_validate(body)


class _Dropped(Exception):
    """A stream ended before its terminal event."""


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

    def feed(self, chunk: bytes) -> Iterator[Event]:
        """The new events a chunk of the stream completed, up to the terminal one."""
        for frame in self.parser.feed(chunk):
            if (event := self.accept(frame)) is not None:
                yield event
            if self.done:
                return

    @staticmethod
    def dropped() -> _Dropped:
        return _Dropped("the stream ended before the terminal event")

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


class _BatchResume(_Resume):
    """Where a followed batch stream stands: the last batch seq yielded, `done` seen."""

    __slots__ = ()

    def request(self, batch_id: str, timeout: httpx.Timeout) -> _Call:
        self.connecting()
        return _Call("GET", _path("batches", batch_id, "stream"), params={"after": self.last_seq},
                     timeout=timeout)

    def accept(self, frame: SSEFrame) -> BatchFrame | None:  # type: ignore[override]
        try:
            seq = int(frame.id or "")
            data = json.loads(frame.data)
        except ValueError as exc:
            raise RuncastClientError(None, f"not a batch frame ({frame.event})") from exc
        if self.done or seq <= self.last_seq:
            return None
        self.last_seq = seq
        self.failures = 0
        self.done = frame.event == "done"
        return BatchFrame(seq=seq, event=frame.event, data=data)

    @staticmethod
    def dropped() -> _Dropped:
        return _Dropped("the batch stream ended before its done frame")


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
    """Everything but the I/O: the twins send the `_Call`s these methods build."""

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

    def _http_options(self) -> dict[str, Any]:
        """The arguments of the twin's httpx client, but its transport."""
        return {"base_url": self.base_url, "headers": self.headers, "timeout": self.timeout}

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

    def _resume_submitted(self) -> _Resume:
        """The state of a POST /runs/stream, which is the stream's first connection."""
        state = self._resume(0)
        state.connecting()
        return state

    @staticmethod
    def _run_id_to_follow(run_id: str | None) -> str:
        """The run a dropped POST /runs/stream goes on following."""
        if run_id is None:
            raise ServerUnavailable(None, "the stream ended before the run id was known")
        return run_id

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
        webhook: str | None,
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"agent": agent, "input": {} if input is None else input}
        options = {
            "events": events,
            "timeout": timeout,
            "metadata": metadata,
            "idempotency_key": idempotency_key,
            "webhook": webhook,
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

    def _wait(self, run_id: str, deadline: float | None) -> _Call:
        chunk_s = _wait_chunk_s(deadline)
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
        self,
        runs: list[dict[str, Any] | RunRequest],
        metadata: dict[str, Any] | None,
        webhook: str | None = None,
    ) -> _Call:
        items = [
            run.model_dump(mode="json") if isinstance(run, RunRequest) else run for run in runs
        ]
        body: dict[str, Any] = {"runs": items, "metadata": metadata or {}}
        if webhook is not None:
            body["webhook"] = webhook
        return _Call("POST", "/batches", BatchCreated, json=body)

    def _batch(self, batch_id: str) -> _Call:
        return _Call("GET", _path("batches", batch_id), BatchStatus)

    def _batch_resume(self, after: int) -> _BatchResume:
        return _BatchResume(last_seq=after, reconnect_timeout=self.reconnect_timeout)

    def _batch_results(self, batch_id: str, after: int, limit: int) -> _Call:
        params = {"after": after, "limit": limit}
        return _Call("GET", _path("batches", batch_id, "results"), BatchResults, params=params)

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
