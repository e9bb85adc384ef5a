"""RedisRunStore: runs as hashes, an index zset, Lua scripts for every status change."""

from __future__ import annotations

import time
from typing import Any

import redis

from streaming.backends.redis import events_channel, events_key, seq_of
from streaming.constants import (
    BATCH_KEY,
    BATCH_RUNS_KEY,
    CANCEL_CHANNEL,
    IDEMPOTENCY_KEY,
    QUEUED_KEY,
    RUN_KEY,
    RUNNING_KEY,
    RUNS_INDEX_KEY,
    UNFINISHED_RUN_TTL_S,
)
from streaming.events import dumps
from tasks import lua
from tasks.batch_store import RedisBatches
from tasks.metrics import MetricsSnapshot, count_submitted, read_redis_metrics
from tasks.store import Outcome, RunStore, decode_record


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

    # -- creating ---------------------------------------------------------------------------
    def create(self, records: list[dict[str, str]], batch: dict[str, Any] | None = None) -> None:
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
            ],
        )
        state = _s(result[0])
        if state != "ok":
            return Outcome(state, _s(result[1]))
        # the fields the execution needs (see lua.CLAIM), not the whole record
        raw = {k: v for k, v in zip(result[2::2], result[3::2], strict=True) if v is not None}
        seq = int(result[1])
        return Outcome("ok", "running", seq, decode_record(raw, seq))

    def finish(self, run_id, status, terminal, fields, *, expect="running", attempt=None):
        result = self._finish(
            keys=[run_key(run_id), events_key(run_id), RUNNING_KEY],
            args=[
                expect, "" if attempt is None else str(attempt), status, events_channel(run_id),
                self.max_events, self.ttl_s, terminal[0], terminal[1], run_id, *_pairs(fields),
            ],
        )
        state = _s(result[0])
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

    def close(self) -> None:
        self.client.close()
