"""Errors of the runcast client (`api.client`) and the mapping of HTTP answers onto them.

    RuncastError (streaming.errors)
    └── RuncastClientError      status_code (None when no response came) and detail
        ├── InvalidRequest      400, 413, 422
        ├── Unauthorized        401, 403
        ├── NotFound            404
        ├── Conflict            409
        └── ServerUnavailable   no connection, or 5xx

All of them are importable from `api.client` too.
"""

from __future__ import annotations

from typing import Any

import httpx

from streaming.errors import RuncastError


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


def _retryable(response: httpx.Response) -> RuncastClientError:
    """The error of a failed stream request; raised unless a reconnect may cure it (5xx)."""
    error = error_from_response(response)
    if not isinstance(error, ServerUnavailable):
        raise error
    return error
