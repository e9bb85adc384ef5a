"""RedisRunStore: runs as hashes, an index zset, Lua scripts for every status change."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable
from typing import Any

import redis

from streaming.backends.redis import decode_batch, events_channel, events_key, seq_of
from streaming.constants import (
    BATCH_KEY,
    BATCH_RUNS_KEY,
    CANCEL_CHANNEL,
    IDEMPOTENCY_KEY,
    METRICS_WEBHOOK_DELIVERIES_KEY,
    QUEUED_KEY,
    REAPER_LOCK_KEY,
    RUN_KEY,
    RUNNING_KEY,
    RUNS_INDEX_KEY,
    SUBSCRIBE_CONFIRM_S,
    UNFINISHED_RUN_TTL_S,
    WORKERS_KEY,
)
from streaming.events import dumps
from tasks import lua
from tasks.batch_store import RedisBatches
from tasks.cancel_listener import CancelSubscriber
from tasks.constants import MAX_IDLE_PUBSUBS
from tasks.errors import RunNotFound
from tasks.metrics import MetricsSnapshot, count_submitted, read_redis_metrics
from tasks.store import CLAIM_FIELDS, TERMINAL, Outcome, RunStore, decode_record, public
from tasks.webhook_store import RedisWebhookQueue

CLAIM_FIELDS_JSON = dumps(list(CLAIM_FIELDS))


def run_key(run_id: str) -> str:
    return RUN_KEY.format(run_id=run_id)


def _s(value: bytes | str | None) -> str | None:
    return value.decode() if isinstance(value, bytes) else value


def _pairs(fields: dict[str, Any]) -> list[str]:
    out: list[str] = []
    for key, value in fields.items():
        out += [key, dumps(value)]
    return out


class RedisRunStore(RedisBatches, RunStore):
    def __init__(self, client: redis.Redis, *, ttl_s: int, max_events: int) -> None:
        self.client = client
        self.ttl_s = ttl_s
        self.max_events = max_events
        self._claim = client.register_script(lua.CLAIM)
        self._finish = client.register_script(lua.FINISH)
        self._cancel = client.register_script(lua.CANCEL)
        self._reap = client.register_script(lua.REAP)
        self._heartbeat = client.register_script(lua.HEARTBEAT)
        self._prune_after: float | None = None  # where prune_index goes on (a score)
        self._dispatch_chunk = client.register_script(lua.DISPATCH_CHUNK)
        self._dispatch_state = client.register_script(lua.DISPATCH_STATE)
        # Pub/sub connections of finished waits, kept for the next one: a wait then costs a
        # SUBSCRIBE, not a new connection (connect, handshake, SUBSCRIBE, close).
        self._idle_pubsubs: list[Any] = []
        self._idle_lock = threading.Lock()

    # -- creating ---------------------------------------------------------------------------
    def create(self, records: list[dict[str, str]], batch: dict[str, Any] | None = None,
               then: Callable[[Any], None] | None = None) -> None:
        """Store new runs (and their batch), in one MULTI; `then(pipeline)` may add commands
        to it (a run's broker message, tasks.runtime), which then land with the runs or not at
        all."""
        if batch is not None and "dispatched" in batch:
            return self.create_batch(records, batch)  # tasks.batch_store
        pipe = self.client.pipeline(transaction=True)
        index: dict[str, float] = {}
        for record in records:
            run_id = _s(record["run_id"]).strip('"')
            pipe.hset(run_key(run_id), mapping=record)
            pipe.expire(run_key(run_id), UNFINISHED_RUN_TTL_S + self.ttl_s)
            index[run_id] = float(record["created_ts"])
        if index:
            pipe.zadd(RUNS_INDEX_KEY, index)
            if batch is None:  # a batch's runs are noted as their dispatch claims them
                pipe.zadd(QUEUED_KEY, index)  # found again if its message is lost (tasks.lost)
        count_submitted(pipe, records)
        if batch is not None:
            batch_id = batch["batch_id"]
            ttl = UNFINISHED_RUN_TTL_S + self.ttl_s
            pipe.hset(BATCH_KEY.format(batch_id=batch_id), mapping={
                k: dumps(v) for k, v in batch.items()
            })
            pipe.expire(BATCH_KEY.format(batch_id=batch_id), ttl)
            runs_key = BATCH_RUNS_KEY.format(batch_id=batch_id)
            ids = list(index)
            for start in range(0, len(ids), 1000):
                pipe.rpush(runs_key, *ids[start : start + 1000])
            pipe.expire(runs_key, ttl)
        if then is not None:
            then(pipe)
        pipe.execute()

    def claim_idempotency(self, key: str, run_id: str, request_hash: str) -> tuple[str, str] | None:
        name = IDEMPOTENCY_KEY.format(key=key)
        if self.client.set(name, f"{run_id} {request_hash}", nx=True, ex=self.ttl_s):
            return None
        held = _s(self.client.get(name)) or ""
        held_run, _, held_hash = held.partition(" ")
        return held_run, held_hash

    def release_idempotency(self, key: str) -> None:
        self.client.delete(IDEMPOTENCY_KEY.format(key=key))

    def delete(self, run_ids: list[str]) -> None:
        if run_ids:
            pipe = self.client.pipeline()
            pipe.delete(*[run_key(r) for r in run_ids])
            pipe.zrem(RUNS_INDEX_KEY, *run_ids)
            pipe.execute()

    # -- reading ----------------------------------------------------------------------------
    def get(self, run_id: str) -> dict[str, Any] | None:
        return self.get_many([run_id])[0]

    def get_many(self, run_ids: list[str]) -> list[dict[str, Any] | None]:
        pipe = self.client.pipeline(transaction=False)
        for run_id in run_ids:
            pipe.hgetall(run_key(run_id))
            pipe.xrevrange(events_key(run_id), "+", "-", count=1)
        results = pipe.execute()
        runs: list[dict[str, Any] | None] = []
        for raw, top in zip(results[::2], results[1::2], strict=True):
            runs.append(decode_record(raw, seq_of(top[0][0]) if top else 0) if raw else None)
        return runs

    def statuses(self, run_ids: list[str]) -> list[str | None]:
        pipe = self.client.pipeline(transaction=False)
        for run_id in run_ids:
            pipe.hget(run_key(run_id), "status")
        return [_s(s) for s in pipe.execute()]

    def list_ids(self, before: tuple[float, str] | None, count: int) -> list[tuple[str, float]]:
        if before is None:
            rows = self.client.zrevrangebyscore(
                RUNS_INDEX_KEY, "+inf", "-inf", start=0, num=count, withscores=True
            )
            return [(_s(m), s) for m, s in rows]
        score, last_id = before
        out: list[tuple[str, float]] = []
        offset = 0
        # entries with the cursor's own score come first; skip up to and including the cursor
        while len(out) < count:
            rows = self.client.zrevrangebyscore(
                RUNS_INDEX_KEY, score, "-inf", start=offset, num=count + 50, withscores=True
            )
            if not rows:
                break
            offset += len(rows)
            for member, member_score in rows:
                member = _s(member)
                if member_score == score and member >= last_id:
                    continue
                out.append((member, member_score))
        return out[:count]

    def batch(self, batch_id: str) -> dict[str, Any] | None:
        raw = self.client.hgetall(BATCH_KEY.format(batch_id=batch_id))
        return decode_record(raw) if raw else None

    def batch_run_ids(self, batch_id: str) -> list[str]:
        return [_s(r) for r in self.client.lrange(BATCH_RUNS_KEY.format(batch_id=batch_id), 0, -1)]

    # -- status changes ---------------------------------------------------------------------
    def claim(self, run_id, attempt, fields, started, heartbeat_deadline) -> Outcome:
        result = self._claim(
            keys=[run_key(run_id), events_key(run_id), RUNNING_KEY, QUEUED_KEY],
            args=[
                attempt, events_channel(run_id), self.max_events, UNFINISHED_RUN_TTL_S,
                started[0], started[1], run_id, heartbeat_deadline, time.time(), *_pairs(fields),
                CLAIM_FIELDS_JSON,
            ],
        )
        state = _s(result[0])
        if state != "ok":
            return Outcome(state, _s(result[1]))
        # the fields the execution needs (CLAIM_FIELDS), not the whole record
        raw = {k: v for k, v in zip(result[2::2], result[3::2], strict=True) if v is not None}
        seq = int(result[1])
        return Outcome("ok", "running", seq, decode_record(raw, seq))

    def finish(self, run_id, status, terminal, fields, *, expect="running", attempt=None,
               cancel_wins=False):
        result = self._finish(
            keys=[run_key(run_id), events_key(run_id), RUNNING_KEY],
            args=[
                expect, "" if attempt is None else str(attempt), status, events_channel(run_id),
                self.max_events, self.ttl_s, terminal[0], terminal[1], run_id,
                "1" if cancel_wins else "0", *_pairs(fields),
            ],
        )
        state = _s(result[0])
        if state == "cancel_requested":
            return Outcome(state, "running", run={"cancel_reason": json.loads(result[1])})
        if state != "ok":
            return Outcome(state, _s(result[1]))
        return Outcome("ok", status, int(result[1]))

    def cancel(self, run_id, reason, cancelled, finished_at) -> Outcome:
        result = self._cancel(
            keys=[run_key(run_id), events_key(run_id), RUNNING_KEY, QUEUED_KEY],
            args=[
                events_channel(run_id), self.max_events, self.ttl_s, cancelled[0], cancelled[1],
                run_id, dumps(reason), dumps(finished_at), CANCEL_CHANNEL,
                dumps({"run_id": run_id, "reason": reason}),
            ],
        )
        return Outcome(_s(result[0]), _s(result[1]))

    def heartbeat(self, run_ids: list[str], deadline: float) -> None:
        if run_ids:
            self._heartbeat(keys=[RUNNING_KEY], args=[deadline, *run_ids])

    def stale(self, now: float) -> list[str]:
        return [_s(m) for m in self.client.zrangebyscore(RUNNING_KEY, "-inf", now)]

    def reap(self, run_id: str, now: float, max_attempts: int) -> Outcome:
        state, attempt = self._reap(keys=[run_key(run_id), RUNNING_KEY],
                                    args=[run_id, now, max_attempts])
        attempt = _s(attempt)
        return Outcome(_s(state), None, int(attempt) if attempt and attempt.isdigit() else 0)

    def expire_index(self, older_than: float) -> None:
        self.client.zremrangebyscore(RUNS_INDEX_KEY, "-inf", older_than)

    def prune_index(self, created_before: float, count: int = 2000) -> None:
        """Drop index entries of runs whose record has expired: `count` runs created before
        `created_before` are looked at per call, going on from where the last call stopped."""
        low = "-inf" if self._prune_after is None else f"({self._prune_after!r}"
        rows = self.client.zrangebyscore(RUNS_INDEX_KEY, low, created_before, start=0,
                                         num=count, withscores=True)
        self._prune_after = rows[-1][1] if len(rows) == count else None
        if not rows:
            return
        pipe = self.client.pipeline(transaction=False)
        for member, _score in rows:
            pipe.exists(run_key(_s(member)))
        gone = [member for (member, _), exists in zip(rows, pipe.execute(), strict=True)
                if not exists]
        if gone:
            self.client.zrem(RUNS_INDEX_KEY, *gone)

    def metrics(self) -> MetricsSnapshot:
        return read_redis_metrics(self.client, QUEUED_KEY, RUNNING_KEY)

    # -- waiting ----------------------------------------------------------------------------
    def _require(self, run_id: str) -> dict[str, Any]:
        run = self.get(run_id)
        if run is None:
            raise RunNotFound(f"no run {run_id!r}")
        return public(run)

    def wait(self, run_id: str, timeout: float | None) -> dict[str, Any]:
        """Woken by the run's events (its pub/sub channel): a terminal event ends the wait.

        Read first: a run that has ended (what a caller waiting for many in turn mostly finds)
        costs one read, no subscription; one still going is read again once subscribed, so its
        terminal event cannot slip between the read and the subscription."""
        run = self._require(run_id)
        if run["status"] in TERMINAL or timeout == 0:
            return run
        deadline = None if timeout is None else time.monotonic() + timeout
        channel = events_channel(run_id)
        wanted = channel.encode()
        pubsub = self._take_pubsub()
        try:
            pubsub.subscribe(channel)
            _confirmed(pubsub, wanted)  # else the read below may come first, and miss the end
            run = self._require(run_id)
            while run["status"] not in TERMINAL:
                remaining = 1.0 if deadline is None else deadline - time.monotonic()
                if remaining <= 0:
                    break
                message = pubsub.get_message(timeout=min(remaining, 1.0))
                if message is None:
                    # a safety net for a dropped subscription, not the delivery path
                    if self.statuses([run_id])[0] in TERMINAL:
                        run = self._require(run_id)
                    continue
                if message["type"] != "message" or message["channel"] != wanted:
                    continue  # a (un)subscribe reply, or a late message of an earlier wait
                if any(e.is_terminal for e in decode_batch(message["data"])):
                    run = self._require(run_id)
        except BaseException:
            _close_quietly(pubsub)
            raise
        self._give_back_pubsub(pubsub, channel)
        return run

    def _take_pubsub(self) -> Any:
        with self._idle_lock:
            pubsub = self._idle_pubsubs.pop() if self._idle_pubsubs else None
        if pubsub is None:
            return self.client.pubsub()
        try:
            for _ in range(10_000):  # what earlier waits left: (un)subscribe replies, late messages
                if pubsub.get_message(timeout=0) is None:
                    break
        except (redis.RedisError, OSError):  # a broken connection is replaced
            _close_quietly(pubsub)
            return self.client.pubsub()
        return pubsub

    def _give_back_pubsub(self, pubsub: Any, channel: str) -> None:
        try:
            pubsub.unsubscribe(channel)
        except (redis.RedisError, OSError):  # a broken connection is not kept
            _close_quietly(pubsub)
            return
        with self._idle_lock:
            if len(self._idle_pubsubs) < MAX_IDLE_PUBSUBS:
                self._idle_pubsubs.append(pubsub)
                return
        _close_quietly(pubsub)

    # -- the fleet --------------------------------------------------------------------------
    def listen_cancels(self, deliver) -> CancelSubscriber:
        subscriber = CancelSubscriber(self.client, deliver)
        subscriber.start()
        subscriber.ready.wait(5)
        return subscriber

    def worker_seen(self, hostname: str, now: float, *, forget_before: float) -> None:
        self.client.zadd(WORKERS_KEY, {hostname: now})
        self.client.zremrangebyscore(WORKERS_KEY, "-inf", forget_before)

    def workers(self, since: float) -> int:
        return self.client.zcount(WORKERS_KEY, since, "+inf")

    def reaper_turn(self, hostname: str, ttl_ms: int) -> bool:
        return bool(self.client.set(REAPER_LOCK_KEY, hostname, nx=True, px=ttl_ms))

    def note_queued(self, run_ids: list[str], now: float) -> None:
        if run_ids:
            self.client.zadd(QUEUED_KEY, dict.fromkeys(run_ids, now))

    def health(self) -> str:
        self.client.ping()
        return "ok"

    def webhook_queue(self) -> RedisWebhookQueue:
        return RedisWebhookQueue(self.client, ttl_s=self.ttl_s)

    def record_webhook_delivery(self, outcome: str) -> None:
        self.client.hincrby(METRICS_WEBHOOK_DELIVERIES_KEY, outcome, 1)

    # dispatch_pending, dispatch_done, stalled_dispatches: tasks.batch_store.RedisBatches

    def close(self) -> None:
        with self._idle_lock:
            idle, self._idle_pubsubs = self._idle_pubsubs, []
        for pubsub in idle:
            _close_quietly(pubsub)
        self.client.close()


def _close_quietly(pubsub: Any) -> None:
    with contextlib.suppress(Exception):
        pubsub.close()


def _confirmed(pubsub: Any, channel: bytes) -> None:
    """Wait (up to SUBSCRIBE_CONFIRM_S) until Redis confirms the subscription to `channel`.

    redis-py's subscribe() only sends the command; a read on another connection may reach
    Redis first, and an event published in between is then neither read nor heard (the wait
    would end only at its once-a-second check). Replies of earlier waits are skipped."""
    deadline = time.monotonic() + SUBSCRIBE_CONFIRM_S
    while (left := deadline - time.monotonic()) > 0:
        message = pubsub.get_message(timeout=left)
        if message is not None and message["type"] == "subscribe" and message["channel"] == channel:
            return
