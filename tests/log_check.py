"""The one checker of a run's event log, for every suite: the contract's invariants of a finished
run's log and, when the run record is given, the record's agreement with it.

Events come as `streaming.events.Event` objects (read from the event backend) or as JSON envelopes
(read over HTTP, from a stream or GET /runs/{id}/events); both are checked alike.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from streaming.events import Event

TERMINAL_EVENT = {"succeeded": "complete", "failed": "error", "cancelled": "cancelled"}
TERMINAL_STATUSES = frozenset(TERMINAL_EVENT)
TERMINAL_TYPES = frozenset(TERMINAL_EVENT.values())


def envelope(event: Event | dict[str, Any]) -> dict[str, Any]:
    if isinstance(event, dict):
        return event
    return {"run_id": event.run_id, "seq": event.seq, "type": event.type, "data": event.data}


def check_log(run: dict[str, Any] | str, events: Sequence[Event | dict[str, Any]], *,
              attempts: int | None = None, started: bool = True) -> None:
    """Check the log of one finished run.

    `run`: its record (the record is then checked against the log too) or only its id.
    `attempts`: how many `started` events the log must hold (None: any number from 1).
    `started=False`: the run ended before any attempt started (no `started` event at all).

    The log: seq contiguous from 1, every event of this run, `started` first with attempts
    1, 2, ... in order (each naming its agent and worker), exactly one terminal event and it is
    last, the terminal event's data shaped as the contract says. The record: terminal, its status
    matching the terminal event, `last_seq`, `attempt`, `finished_at`, and `output` or `error`
    equal to the terminal event's.
    """
    record = run if isinstance(run, dict) else None
    run_id = record["run_id"] if record is not None else run
    if record is not None:
        assert record["status"] in TERMINAL_STATUSES, record
    log = [envelope(e) for e in events]
    assert log, f"run {run_id} has no events"
    kinds = [e["type"] for e in log]
    seqs = [e["seq"] for e in log]
    assert seqs == list(range(1, len(log) + 1)), f"{run_id}: seq not contiguous from 1: {seqs}"
    assert {e["run_id"] for e in log} == {run_id}, f"{run_id}: events of another run"

    starts = [e["data"] for e in log if e["type"] == "started"]
    if started:
        assert kinds[0] == "started", f"{run_id}: first event {kinds[0]}: {kinds}"
        numbers = [s["attempt"] for s in starts]
        expected = attempts if attempts is not None else len(numbers)
        assert numbers == list(range(1, expected + 1)), f"{run_id}: attempts {numbers}"
        for start in starts:
            assert isinstance(start["agent"], str) and start["agent"], start
            if record is not None:
                assert start["agent"] == record["agent"], (start, record["agent"])
            assert isinstance(start["worker"], str) and start["worker"], start
        if record is not None:
            assert record["attempt"] == len(numbers), (run_id, record["attempt"], numbers)
    else:
        assert starts == [], f"{run_id}: started events in a run that never started: {kinds}"

    terminals = [kind for kind in kinds if kind in TERMINAL_TYPES]
    assert len(terminals) == 1, f"{run_id}: terminal events {terminals}"
    assert kinds[-1] in TERMINAL_TYPES, f"{run_id}: the terminal event is not last: {kinds}"
    last = log[-1]["data"]
    if kinds[-1] == "complete":
        assert "output" in last, last
        assert isinstance(last["latency_seconds"], int | float) and last["latency_seconds"] >= 0
        assert last["metadata"] == {}, last
    elif kinds[-1] == "error":
        assert set(last) == {"error", "code", "details"}, last
    else:
        assert set(last) == {"reason"}, last

    if record is None:
        return
    assert kinds[-1] == TERMINAL_EVENT[record["status"]], (run_id, record["status"], kinds[-1])
    assert record["last_seq"] == seqs[-1], (run_id, record["last_seq"], seqs[-1])
    assert record["finished_at"], record
    if record["status"] == "succeeded":
        assert record["output"] == last["output"]
        assert record["error"] is None
    elif record["status"] == "failed":
        assert record["error"] == last
        assert record["output"] is None
