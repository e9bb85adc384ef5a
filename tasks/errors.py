"""Errors of the run side (see streaming.errors for the tree)."""

from streaming.errors import RuncastError


class UnknownAgent(RuncastError):
    """Raised when no agent of that name is registered."""


class InvalidRequest(RuncastError):
    """Raised when a submit's arguments are wrong (filter, input, timeout)."""


class InputTooLarge(InvalidRequest):
    """Raised when a run's input is over the size limit."""


class RunNotFound(RuncastError):
    """Raised when no run (or batch) has that id."""


class RunConflict(RuncastError):
    """Raised when a run cannot do what was asked in its state, or an idempotency key clashes."""


class BrokerUnavailable(RuncastError):
    """Raised when a run could not be handed to the broker."""
