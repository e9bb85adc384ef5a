"""What callers do with runs: submit, read, wait, cancel, list, batches."""

from __future__ import annotations

import functools
import hashlib
import json
import math
import uuid
from typing import TYPE_CHECKING, Any

from streaming.constants import MAX_INPUT_DEPTH
from streaming.events import dumps, envelope_parts, nesting_depth, utc_now_iso
from streaming.filters import EventsFilter
from tasks import registry
from tasks.batch_store import batch_fields
from tasks.constants import BATCH_MAX_RUNS, LIST_MAX_SCANNED
from tasks.dispatch import start_dispatch
from tasks.errors import (
    BrokerUnavailable,
    InputTooLarge,
    InvalidRequest,
    RunConflict,
    RunNotFound,
    UnknownAgent,
)
from tasks.store import STATUSES, TERMINAL, decode_record, new_record, public
from tasks.webhook_urls import accept_webhook
from tasks.webhooks import pending_status

if TYPE_CHECKING:
    from tasks.runtime import Runtime


def new_id() -> str:
    """A random run or batch id: 128 bits from the OS (122 random in a UUID4)."""
    return uuid.uuid4().hex


def json_text(value: Any, what: str) -> str:
    """`value` as JSON text that Redis, the API and every client can take back; else 422."""
    if nesting_depth(value, MAX_INPUT_DEPTH) > MAX_INPUT_DEPTH:
        raise InvalidRequest(f"{what} is nested deeper than {MAX_INPUT_DEPTH} levels")
    try:
        text = dumps(value)
        text.encode()
    except UnicodeEncodeError:
        raise InvalidRequest(f"{what} holds a lone surrogate: it is not valid Unicode") from None
    except (TypeError, ValueError) as exc:
        raise InvalidRequest(f"{what} must be JSON (no NaN or Infinity): {exc}") from None
    return text


def _webhook(rt: Runtime, url: str | None, checked: set[str] | None = None) -> str | None:
    """A submitted webhook URL once accepted (tasks.webhook_urls); `checked` (URLs accepted
    already) spares a batch the same lookup per run."""
    if url is None or (checked is not None and url in checked):
        return url
    settings = rt.settings
    accept_webhook(url, signing=settings.webhook_key is not None,
                   allow_private=settings.webhook_allow_private)
    if checked is not None:
        checked.add(url)
    return url


@functools.lru_cache(maxsize=256)
def _cached_filter(events: str) -> EventsFilter:
    return EventsFilter(events)


def _events_filter(events: Any) -> EventsFilter:
    """EventsFilter(events); a filter named by a string is made once (a batch repeats it)."""
    return _cached_filter(events) if isinstance(events, str) else EventsFilter(events)


def _prepare(rt: Runtime, agent: str, input: Any, events: Any, timeout: float | None, metadata: dict | None,
             idempotency_key: str | None, batch_id: str | None, created_at: str,
             *, index: int | None = None, webhook: str | None = None,
             checked: set[str] | None = None) -> dict[str, str]:
    settings = rt.settings
    spec = registry.get_agent(agent)
    if spec is None:
        raise UnknownAgent(f"unknown agent {agent!r}")
    try:
        spec_events = _events_filter(
            events if events is not None else spec.events or settings.events)
    except (ValueError, TypeError) as exc:
        raise InvalidRequest(str(exc)) from None
    if timeout is not None and (not isinstance(timeout, int | float) or timeout <= 0):
        raise InvalidRequest("timeout must be a positive number of seconds")
    if metadata is not None and not isinstance(metadata, dict):
        raise InvalidRequest("metadata must be a JSON object")
    input_json = json_text({} if input is None else input, "input")
    metadata_json = json_text(metadata or {}, "metadata")
    size = len(input_json.encode())
    if size > settings.max_input_bytes:
        raise InputTooLarge(f"input is {size} bytes, over the limit of {settings.max_input_bytes}")
    limits = [settings.default_timeout] + [t for t in (spec.timeout, timeout) if t]
    webhook = _webhook(rt, webhook, checked)  # last: its DNS lookup is the slow part
    request_hash = None  # compared only for an idempotency key
    if idempotency_key is not None:
        hashed = [agent, input_json, spec_events.spec, timeout, metadata_json]
        if webhook is not None:
            hashed.append(webhook)
        request_hash = hashlib.sha256(dumps(hashed).encode()).hexdigest()[:32]
    return new_record(
        new_id(), agent, input_json, events=spec_events.spec, timeout=min(limits),
        metadata=metadata or {}, batch_id=batch_id, idempotency_key=idempotency_key,
        request_hash=request_hash, created_at=created_at, queue=spec.queue, index=index,
        webhook=webhook,
    )


def submit(rt: Runtime, agent: str, input: Any = None, *, events: Any = None, timeout: float | None = None,
           metadata: dict | None = None, idempotency_key: str | None = None,
           batch_id: str | None = None, webhook: str | None = None) -> str:
    """Validate, store the run as queued, enqueue it; returns the run id."""
    return submit_run(rt, agent, input, events=events, timeout=timeout, metadata=metadata,
                      idempotency_key=idempotency_key, batch_id=batch_id, webhook=webhook)[0]


def submit_run(rt: Runtime, agent: str, input: Any = None, *, events: Any = None,
               timeout: float | None = None, metadata: dict | None = None,
               idempotency_key: str | None = None,
               batch_id: str | None = None, webhook: str | None = None) -> tuple[str, bool]:
    """Like submit; also says whether the run is new (False: an idempotent repeat)."""
    run_id, new, _record = _submit_run(rt, agent, input, events, timeout, metadata,
                                       idempotency_key, batch_id, webhook)
    return run_id, new


def submit_and_show(rt: Runtime, agent: str, input: Any = None, *, events: Any = None,
                    timeout: float | None = None, metadata: dict | None = None,
                    idempotency_key: str | None = None,
                    webhook: str | None = None) -> tuple[dict[str, Any], bool]:
    """Like submit_run, answering with the run as the contract's JSON: a new run as it was
    stored (queued, no read back), an idempotent repeat as it is now."""
    run_id, new, record = _submit_run(rt, agent, input, events, timeout, metadata,
                                      idempotency_key, None, webhook)
    if record is None:
        return require_run(rt, run_id), new
    return public(decode_record(record, 0)), new


def _submit_run(rt: Runtime, agent: str, input: Any, events: Any, timeout: float | None,
                metadata: dict | None, idempotency_key: str | None, batch_id: str | None,
                webhook: str | None) -> tuple[str, bool, dict[str, str] | None]:
    """(run id, new, the stored record when new)."""
    record = _prepare(rt, agent, input, events, timeout, metadata, idempotency_key, batch_id,
                      utc_now_iso(), webhook=webhook)
    run_id = json.loads(record["run_id"])
    request_hash = json.loads(record["request_hash"])
    if idempotency_key is not None:
        held = rt.store.claim_idempotency(idempotency_key, run_id, request_hash)
        if held is not None:
            held_run, held_hash = held
            if held_hash != request_hash:
                raise RunConflict(
                    f"idempotency key {idempotency_key!r} was used with a different request"
                )
            return held_run, False, None
    try:
        rt.create_and_enqueue(record, run_id, agent)
    except BrokerUnavailable:
        if idempotency_key is not None:
            rt.store.release_idempotency(idempotency_key)
        raise
    return run_id, True, record


def submit_batch(rt: Runtime, runs: list[dict[str, Any]], metadata: dict | None = None,
                 webhook: str | None = None) -> dict[str, Any]:
    """All or nothing: every run is validated, then all are stored at once; the workers send
    their broker messages afterwards, in submit order (tasks.dispatch). `webhook` is told
    `batch.done` once every run has ended."""
    if not 1 <= len(runs) <= BATCH_MAX_RUNS:
        raise InvalidRequest(f"a batch holds 1 to {BATCH_MAX_RUNS:,} runs")
    batch_id = new_id()
    created_at = utc_now_iso()
    records = []
    checked: set[str] = set()
    for index, run in enumerate(runs):
        try:
            records.append(_prepare(
                rt, run.get("agent"), run.get("input"), run.get("events"), run.get("timeout"),
                run.get("metadata"), None, batch_id, created_at, index=index,
                webhook=run.get("webhook"), checked=checked,
            ))
        except (UnknownAgent, InvalidRequest, InputTooLarge) as exc:
            raise type(exc)(f"runs[{index}]: {exc}") from None
    json_text(metadata or {}, "metadata")
    webhook = _webhook(rt, webhook, checked)
    run_ids = [json.loads(r["run_id"]) for r in records]
    queues = _queue_counts(records)  # each queue's runs are dispatched by its own workers
    batch = batch_fields(batch_id, len(records), created_at, metadata or {}, queues)
    if webhook is not None:
        batch.update(webhook=webhook, webhook_status=pending_status())
    rt.store.create(records, batch)
    try:
        start_dispatch(rt, batch_id, list(queues))
    except BrokerUnavailable:
        rt.store.delete(run_ids)
        rt.store.forget_batch(batch_id)
        raise
    return {"batch_id": batch_id, "run_ids": run_ids, "total": len(run_ids)}


def _queue_counts(records: list[dict[str, str]]) -> dict[str, int]:
    """How many of the runs go to each queue, in the order of each queue's first run."""
    counts: dict[str, int] = {}
    for record in records:
        counts[record["queue"]] = counts.get(record["queue"], 0) + 1
    return {json.loads(queue): n for queue, n in counts.items()}


def get_run(rt: Runtime, run_id: str) -> dict[str, Any] | None:
    """The run as the contract's JSON (without stream_token), or None."""
    if not isinstance(run_id, str) or not run_id:
        return None
    run = rt.store.get(run_id)
    return public(run) if run else None


def require_run(rt: Runtime, run_id: str) -> dict[str, Any]:
    run = get_run(rt, run_id)
    if run is None:
        raise RunNotFound(f"no run {run_id!r}")
    return run


def wait(rt: Runtime, run_id: str, timeout: float | None = None) -> dict[str, Any]:
    """Block until the run is terminal (woken by its events), or `timeout` passes."""
    return rt.store.wait(run_id, timeout)


def cancel(rt: Runtime, run_id: str, reason: str | None = None) -> dict[str, Any]:
    """Queued: cancelled at once. Running: told to stop (hard stop after the grace period)."""
    result = rt.store.cancel(
        run_id, reason, envelope_parts(run_id, "cancelled", {"reason": reason}), utc_now_iso()
    )
    if result.state == "missing":
        raise RunNotFound(f"no run {run_id!r}")
    if result.state == "terminal":
        raise RunConflict(f"run {run_id} already ended ({result.status})")
    return require_run(rt, run_id)


def list_runs(rt: Runtime, status: str | None = None, agent: str | None = None, batch_id: str | None = None,
              limit: int = 50, cursor: str | None = None) -> dict[str, Any]:
    """Runs newest first, filtered; `next_cursor` continues after the last one returned."""
    if status is not None and status not in STATUSES:
        raise InvalidRequest(f"status must be one of {', '.join(STATUSES)}")
    before = _parse_cursor(cursor)
    store = rt.store
    runs: list[dict[str, Any]] = []
    scanned = 0
    last: tuple[float, str] | None = before
    while len(runs) < limit and scanned < LIST_MAX_SCANNED:
        page = store.list_ids(last, max(limit * 2, 100))
        if not page:
            last = None
            break
        scanned += len(page)
        for (run_id, score), run in zip(page, store.get_many([r for r, _ in page]), strict=True):
            last = (score, run_id)
            if run is None:
                continue
            if (status and run["status"] != status) or (agent and run["agent"] != agent) or (
                batch_id and run.get("batch_id") != batch_id
            ):
                continue
            runs.append(public(run))
            if len(runs) == limit:
                break
    next_cursor = f"{last[0]!r}:{last[1]}" if last is not None and len(runs) == limit else None
    return {"runs": runs, "next_cursor": next_cursor}


def _parse_cursor(cursor: str | None) -> tuple[float, str] | None:
    if not cursor:
        return None
    score, sep, run_id = cursor.partition(":")
    try:
        if not sep or not run_id or not math.isfinite(float(score)):
            raise ValueError
        return float(score), run_id
    except ValueError:
        raise InvalidRequest(f"invalid cursor {cursor!r}") from None


def batch_status(rt: Runtime, batch_id: str) -> dict[str, Any]:
    store = rt.store
    batch = store.batch(batch_id)
    if batch is None:
        raise RunNotFound(f"no batch {batch_id!r}")
    counts: dict[str, int] = {}
    for status in store.statuses(store.batch_run_ids(batch_id)):
        status = status or "expired"
        counts[status] = counts.get(status, 0) + 1
    done = all(s in TERMINAL or s == "expired" for s in counts)
    status = {"batch_id": batch_id, "total": batch["total"], "counts": counts, "done": done,
              "created_at": batch.get("created_at"), "finished_at": batch.get("finished_at")}
    if batch.get("webhook"):  # only a batch with a webhook shows these
        status.update(webhook=batch["webhook"], webhook_status=batch.get("webhook_status"))
    return status


def cancel_batch(rt: Runtime, batch_id: str, reason: str | None = None) -> dict[str, Any]:
    """Stop the batch's dispatch, then cancel every run that has not ended."""
    store = rt.store
    if store.batch(batch_id) is None:
        raise RunNotFound(f"no batch {batch_id!r}")
    store.stop_dispatch(batch_id)
    ids = store.batch_run_ids(batch_id)
    live = [r for r, s in zip(ids, store.statuses(ids), strict=True)
            if s is not None and s not in TERMINAL]
    cancelled = {r: envelope_parts(r, "cancelled", {"reason": reason}) for r in live}
    store.cancel_many(live, reason, cancelled, utc_now_iso())  # one that ended meanwhile stays
    return batch_status(rt, batch_id)
