"""The run store: one record per run, an index by time, batches, atomic status changes."""

from __future__ import annotations

import json
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from streaming.events import dumps
from tasks.metrics import MetricsSnapshot
from tasks.webhooks import pending_status

STATUSES = ("queued", "running", "succeeded", "failed", "cancelled")
TERMINAL = frozenset({"succeeded", "failed", "cancelled"})

# Record fields returned to callers, in the contract's order (stream_token is added by the API).
PUBLIC_FIELDS = (
    "run_id", "agent", "status", "created_at", "started_at", "finished_at", "attempt", "input",
    "output", "error", "progress", "last_seq", "cancel_requested", "batch_id", "metadata",
    "webhook", "webhook_status",
)


# What a claim returns of the record: only what the execution needs (the whole record costs
# both ends time on every run), plus `last_seq`. The Lua CLAIM script reads the same names.
CLAIM_FIELDS = ("input", "events", "timeout", "cancel_requested", "cancel_reason")


@dataclass(frozen=True)
class Outcome:
    """What a store operation did: `state` is 'ok' or why not, `status` the run's status then."""

    state: str
    status: str | None = None
    seq: int = 0
    run: dict[str, Any] | None = None

    @property
    def ok(self) -> bool:
        return self.state == "ok"


def new_record(
    run_id: str,
    agent: str,
    input_json: str,
    *,
    events: str,
    timeout: float,
    metadata: dict,
    batch_id: str | None,
    idempotency_key: str | None,
    request_hash: str,
    created_at: str,
    queue: str = "default",
    webhook: str | None = None,
    index: int | None = None,
) -> dict[str, str]:
    """A queued run's record, every value JSON text except `status`."""
    record = {
        "run_id": dumps(run_id),
        "agent": dumps(agent),
        "queue": dumps(queue),  # where a reaper that does not load the agent requeues it
        "status": "queued",
        "created_at": dumps(created_at),
        "created_ts": dumps(time.time()),
        "started_at": "null",
        "finished_at": "null",
        "attempt": "0",
        "input": input_json,
        "output": "null",
        "error": "null",
        "progress": "null",
        "cancel_requested": "false",
        "cancel_reason": "null",
        "batch_id": dumps(batch_id),
        "metadata": dumps(metadata),
        "events": dumps(events),
        "timeout": dumps(timeout),
        "deadline": "null",
        "worker": "null",
        "idempotency_key": dumps(idempotency_key),
        "request_hash": dumps(request_hash),
        "index": dumps(index),  # its position in its batch (None: not in a batch)
    }
    if webhook is not None:  # tasks.webhooks: delivered once the run ends
        record["webhook"] = dumps(webhook)
        record["webhook_status"] = dumps(pending_status())
    return record


def decode_record(raw: dict, last_seq: int | None = None) -> dict[str, Any]:
    """Redis hash (bytes or str) -> a run dict with every field decoded.

    Each field holds JSON text (`status` plain text), so the record is decoded as one JSON
    object put together from them: one parse instead of one per field, under half the time on
    every read of a run. The field names are runcast's own (no character to escape)."""
    parts = []
    for key, value in raw.items():
        key = key.decode() if isinstance(key, bytes) else key
        value = value.decode() if isinstance(value, bytes) else value
        parts.append(f'"{key}":{dumps(value) if key == "status" else value}')
    run: dict[str, Any] = json.loads("{" + ",".join(parts) + "}")
    if last_seq is not None:
        run["last_seq"] = last_seq
    return run


def public(run: dict[str, Any]) -> dict[str, Any]:
    return {field: run.get(field) for field in PUBLIC_FIELDS}


class RunStore(ABC):
    """Where runs live. RedisRunStore in production, MemoryRunStore in embedded mode.

    One state machine, two stores. The transitions are the ones below, and nothing else changes
    a run's status:

        claim   queued -> running     fenced: attempt == stored attempt + 1; `started` appended
        finish  running -> terminal   fenced by `expect` and attempt; the terminal event first
        cancel  queued -> cancelled   at once, with its `cancelled` event
                running -> running    flagged (cancel_requested) and told to its process
        reap    running -> queued     a stale heartbeat, attempts left (else the caller fails it)
        terminal -> (nothing)         every later claim, finish or cancel answers 'terminal'

    Why two implementations rather than one store on an in-process stand-in: embedded mode must
    run without Redis (no server, no Lua interpreter in the process), and a Redis stand-in would
    be a second Redis to keep right. So each store implements the machine natively, atomically
    (one Lua script per transition; one lock in memory), answers with the same Outcome states
    and shapes (CLAIM_FIELDS), and tests/test_store_contract.py runs every transition against
    both, so they cannot drift unseen (dramatiq's stub and Redis result backends, likewise).
    """

    @abstractmethod
    def create(self, records: list[dict[str, str]], batch: dict[str, Any] | None = None) -> None:
        """Store queued runs (and their batch) all at once."""

    @abstractmethod
    def claim_idempotency(self, key: str, run_id: str, request_hash: str) -> tuple[str, str] | None:
        """Reserve `key` for `run_id`; or return the (run_id, request_hash) that holds it."""

    @abstractmethod
    def release_idempotency(self, key: str) -> None: ...

    @abstractmethod
    def delete(self, run_ids: list[str]) -> None:
        """Remove runs that could not be enqueued."""

    @abstractmethod
    def get(self, run_id: str) -> dict[str, Any] | None: ...

    @abstractmethod
    def get_many(self, run_ids: list[str]) -> list[dict[str, Any] | None]: ...

    @abstractmethod
    def statuses(self, run_ids: list[str]) -> list[str | None]: ...

    @abstractmethod
    def list_ids(self, before: tuple[float, str] | None, count: int) -> list[tuple[str, float]]:
        """Run ids newest first, strictly older than the cursor `before` (score, run_id)."""

    @abstractmethod
    def batch(self, batch_id: str) -> dict[str, Any] | None: ...

    @abstractmethod
    def batch_run_ids(self, batch_id: str) -> list[str]: ...

    @abstractmethod
    def claim(self, run_id: str, attempt: int, fields: dict[str, Any], started: tuple[str, str],
              heartbeat_deadline: float) -> Outcome:
        """queued -> running for `attempt` (fenced: only attempt = stored attempt + 1), with the
        `started` event (prefix, suffix around seq) appended in the same step."""

    @abstractmethod
    def finish(self, run_id: str, status: str, terminal: tuple[str, str], fields: dict[str, Any],
               *, expect: str = "running", attempt: int | None = None,
               cancel_wins: bool = False) -> Outcome:
        """Write the terminal event and status at once, unless the run already ended. With
        `cancel_wins`, a run whose cancel was accepted is left as it is: 'cancel_requested', with
        the cancel's reason as `run["cancel_reason"]` (the caller ends it cancelled)."""

    @abstractmethod
    def cancel(self, run_id: str, reason: str | None, cancelled: tuple[str, str],
               finished_at: str) -> Outcome:
        """A queued run ends cancelled at once; a running one is flagged and told."""

    @abstractmethod
    def heartbeat(self, run_ids: list[str], deadline: float) -> None: ...

    @abstractmethod
    def stale(self, now: float) -> list[str]:
        """Running runs whose heartbeat deadline has passed."""

    @abstractmethod
    def reap(self, run_id: str, now: float, max_attempts: int) -> Outcome:
        """A stale run: 'requeue' (now queued again), 'lost', 'timeout', or 'alive'/'gone'."""

    @abstractmethod
    def wait(self, run_id: str, timeout: float | None) -> dict[str, Any]:
        """The run (public fields) once terminal, or as it is when `timeout` passes;
        RunNotFound when there is no such run."""

    @abstractmethod
    def listen_cancels(self, deliver: Callable[[str, str | None], None]) -> Any:
        """Call `deliver(run_id, reason)` in this process for every running run's cancel
        request; returns what to `stop()` (or None)."""

    @abstractmethod
    def worker_seen(self, hostname: str, now: float, *, forget_before: float) -> None:
        """A worker reported alive at `now`; forget the ones silent since `forget_before`."""

    @abstractmethod
    def workers(self, since: float) -> int | None:
        """Workers that reported since `since` (None: the store cannot tell, in-process)."""

    @abstractmethod
    def reaper_turn(self, hostname: str, ttl_ms: int) -> bool:
        """Whether this worker reaps now (one worker of a fleet per reaper interval)."""

    @abstractmethod
    def note_queued(self, run_ids: list[str], now: float) -> None:
        """These runs were (re)sent to the broker at `now` (see tasks.lost)."""

    @abstractmethod
    def health(self) -> str:
        """'ok' (or 'embedded'); raises when the store is unreachable."""

    @abstractmethod
    def webhook_queue(self) -> Any:
        """The due webhook deliveries (a tasks.webhook_store.WebhookQueue)."""

    @abstractmethod
    def record_webhook_delivery(self, outcome: str) -> None:
        """Count one webhook delivery attempt's outcome in the fleet's metrics."""

    # Batches at scale (tasks.batch_store holds both stores' implementations).
    def dispatch_chunk(self, batch_id: str, size: int, now: float, ahead: int | None = None,
                       queue: str | None = None) -> tuple[int, int, list | None]:
        """Claim the next `size` runs of the batch to send: (cursor, total, [(run_id, agent,
        queue)] of those still queued); None instead of the list while `ahead` messages of the
        batch already sent still wait in the broker. With `queue`, of that queue's lane (a batch
        on several queues; tasks.batch_store): cursor, total and waiting messages are the lane's."""
        raise NotImplementedError

    def stop_dispatch(self, batch_id: str) -> None:
        """Send no more of the batch's messages (it is being cancelled); it leaves the
        dispatching set, so it is never resumed."""
        raise NotImplementedError

    def cancel_many(self, run_ids: list[str], reason: str | None,
                    cancelled: dict[str, tuple[str, str]], finished_at: str) -> None:
        """`cancel` of many runs (`cancelled`: each run's event parts)."""
        raise NotImplementedError

    def forget_batch(self, batch_id: str) -> None:
        """Remove a batch whose dispatch could not begin (its runs go with `delete`)."""
        raise NotImplementedError

    def batch_frames(self, batch_id: str, after: int, limit: int) -> list[dict[str, Any]]:
        """The batch log's frames `{"seq", "event", "data"}` with seq > after, in order."""
        raise NotImplementedError

    def batch_results(self, batch_id: str, start: int, stop: int) -> list[dict[str, Any]]:
        """Results of the runs at indexes start..stop-1: index, run_id, status, output, error."""
        raise NotImplementedError

    def dispatch_pending(self, batch_id: str, stale_at: float) -> bool | None:
        """The batch's dispatch is under way; it counts as stalled after `stale_at` (epoch s).
        A batch gone or wholly sent (or cancelled) leaves the dispatching set instead (False)."""
        raise NotImplementedError

    def dispatch_done(self, batch_id: str) -> None:
        """A dispatch (or one lane of it) ended: the batch leaves the dispatching set once every
        message of it was sent (or it is gone)."""
        raise NotImplementedError

    def dispatch_lanes(self, batch_id: str) -> list[str]:
        """The queues whose dispatch of the batch has runs left to send."""
        raise NotImplementedError

    def stalled_dispatches(self, now: float) -> list[str]:
        """Batches whose dispatch made no progress since their `stale_at`."""
        raise NotImplementedError

    def expire_index(self, older_than: float) -> None:
        """Forget index entries of runs created before `older_than` (epoch s)."""

    def prune_index(self, created_before: float) -> None:
        """Forget some index entries of runs created before `created_before` whose record has
        expired (a finished run's record lives RUNCAST_RUN_TTL, its index entry as long)."""

    def metrics(self) -> MetricsSnapshot:
        """The fleet's run metrics (see tasks.metrics)."""
        return MetricsSnapshot()

    def close(self) -> None:
        pass
