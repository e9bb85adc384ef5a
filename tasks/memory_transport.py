"""The embedded mode's broker: kombu's in-memory transport, with a worker that stops promptly.

A worker on a transport without asynchronous I/O (this one) runs Celery's blocking loop, which
drains with a 2 s timeout and looks at its shutdown flags only between drains, once more after it
is told to stop: stopping an embedded worker (closing the runtime, the end of `runcast demo`, an
embedded API's shutdown) took 2 to 4 s. Here a drain is served in slices of DRAIN_SLICE_S and ends
early once the worker is stopping; otherwise it waits as long as its caller asked.
"""

from __future__ import annotations

import time
from typing import Any

from celery.worker import state
from kombu.transport import memory

from tasks.constants import DRAIN_SLICE_S


def _stopping() -> bool:
    """Celery's own test (celery.worker.state.maybe_shutdown): 0 is a flag set, None and False
    are not."""
    return any(flag is not None and flag is not False
               for flag in (state.should_terminate, state.should_stop))


class Transport(memory.Transport):
    """kombu's memory transport (the same process-wide queues), its drain cut short on stop."""

    def drain_events(self, connection: Any, timeout: float | None = None) -> Any:
        if timeout is None:
            return super().drain_events(connection, None)
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            try:
                return super().drain_events(connection, timeout=max(min(left, DRAIN_SLICE_S),
                                                                    0.001))
            except TimeoutError:  # socket.timeout, its alias
                if left <= DRAIN_SLICE_S or _stopping():
                    raise


TRANSPORT = f"{__name__}:Transport"
