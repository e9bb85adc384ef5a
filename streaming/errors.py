"""Exceptions of runcast.

    RuncastError
    ├── EventStoreUnavailable   the event store could not be written for too long
    ├── UnknownAgent            (tasks) no agent of that name is registered
    ├── InvalidRequest          (tasks) a submit's arguments are wrong
    ├── RunNotFound             (tasks) no run of that id
    ├── RunConflict             (tasks) the run cannot do that in its state
    └── ...

    RunCancelled (BaseException)  the run was cancelled; agent code's `except Exception`
                                  cannot swallow it.
"""


class RuncastError(Exception):
    """Root of runcast's errors."""


class EventStoreUnavailable(RuncastError):
    """Raised when events could not be made durable within the outage limit."""


class RunCancelled(BaseException):
    """Raised in agent code once its run was cancelled (or timed out).

    A BaseException, like asyncio.CancelledError, so a broad ``except Exception`` in agent code
    does not swallow it.
    """

    def __init__(self, reason: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
