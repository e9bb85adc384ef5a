"""What the run stores do for batches at scale: dispatch cursor, the batch log, results.

Redis: the cursor is claimed by a Lua script (tasks/lua.py DISPATCH_CHUNK) and the log is
appended by the scripts that change a run's status (tasks/lua.py BATCH_LOG). Memory: the same,
under the store's lock.

A batch whose runs go to several queues is dispatched in lanes, one per queue, each by a worker
of that queue (tasks.dispatch): a queue no worker consumes then holds back only its own runs.
The memory store has a single lane: embedded mode sends every message within the request.
"""

from __future__ import annotations

import json
from typing import Any

from streaming.backends.redis import events_channel, events_key
from streaming.constants import (
    BATCH_EVENTS_KEY,
    BATCH_KEY,
    BATCH_RUNS_KEY,
    CANCEL_CHANNEL,
    DISPATCHING_KEY,
    QUEUED_KEY,
    RUN_KEY,
    RUNNING_KEY,
    RUNS_INDEX_KEY,
    UNFINISHED_RUN_TTL_S,
)
from streaming.events import dumps
from streaming.lua_scripts import build_script, read_lua
from tasks.constants import STALLED_DISPATCHES_READ
from tasks.metrics import count_submitted

BATCH_STATUSES = ("queued", "running", "succeeded", "failed", "cancelled")
ENDED = frozenset({"succeeded", "failed", "cancelled"})
FRAME_FIELD = b"f"


def _s(value: bytes | str | None) -> str | None:
    return value.decode() if isinstance(value, bytes) else value


def _json(value: bytes | str | None) -> Any:
    return None if value is None else json.loads(value)


def batch_fields(batch_id: str, total: int, created_at: str, metadata: dict,
                 queues: dict[str, int] | None = None) -> dict[str, Any]:
    """A new batch's hash: the contract's fields, the dispatch cursor and the queue its dispatch
    task goes to, the log's seq and the count of runs per status (`n:<status>`), all queued at
    first. `queues`: how many runs go to each queue, in the order of their first run; a batch on
    several has a lane per queue (`dispatch_queues`; `total@`, `dispatched@`, `n:queued@` each)."""
    queues = queues or {"default": total}
    fields = {"batch_id": batch_id, "total": total, "created_at": created_at,
              "metadata": metadata, "finished_at": None, "dispatched": 0,
              "dispatch_queue": next(iter(queues)), "log_seq": 0, "n:queued": total}
    if len(queues) > 1:
        fields["dispatch_queues"] = list(queues)
        for queue, count in queues.items():
            fields.update({f"total@{queue}": count, f"dispatched@{queue}": 0,
                           f"n:queued@{queue}": count})
    return fields


def lane_key(batch_id: str, queue: str) -> str:
    """The run ids of the batch that go to `queue`, in submit order (a batch on several queues)."""
    return f"{BATCH_RUNS_KEY.format(batch_id=batch_id)}@{queue}"


def result_of(index: int, run_id: str, status: str | None, output: Any, error: Any) -> dict:
    return {"index": index, "run_id": run_id, "status": status or "expired", "output": output,
            "error": error}


CREATE_RUNS = build_script([read_lua("tasks", "create_runs.lua")])  # see the file
CREATE_CHUNK = 1_000  # records per script call (Lua's unpack takes a few thousand values)


class RedisBatches:
    """Mixed into RedisRunStore (which sets `client`, `ttl_s` and `_dispatch_chunk`)."""

    client: Any
    ttl_s: int
    max_events: int
    _dispatch_chunk: Any
    _dispatch_state: Any
    _cancel: Any

    def _lanes(self, batch_id: str) -> list[str]:
        """The queues of a batch dispatched in lanes (none: one queue, or no batch)."""
        return _json(self.client.hget(BATCH_KEY.format(batch_id=batch_id),
                                      "dispatch_queues")) or []

    def cancel_many(self, run_ids: list[str], reason: str | None,
                    cancelled: dict[str, tuple[str, str]], finished_at: str) -> None:
        """store.cancel of each run (tasks/lua.py CANCEL), pipelined a thousand at a time."""
        for start in range(0, len(run_ids), CREATE_CHUNK):
            pipe = self.client.pipeline(transaction=False)
            for run_id in run_ids[start : start + CREATE_CHUNK]:
                parts = cancelled[run_id]
                self._cancel(
                    keys=[RUN_KEY.format(run_id=run_id), events_key(run_id), RUNNING_KEY,
                          QUEUED_KEY],
                    args=[events_channel(run_id), self.max_events, self.ttl_s, parts[0],
                          parts[1], run_id, dumps(reason), dumps(finished_at), CANCEL_CHANNEL,
                          dumps({"run_id": run_id, "reason": reason})],
                    client=pipe)
            pipe.execute()

    def forget_batch(self, batch_id: str) -> None:
        """Remove a batch that could not be dispatched (its runs go with store.delete)."""
        lanes = [lane_key(batch_id, queue) for queue in self._lanes(batch_id)]
        self.client.delete(BATCH_KEY.format(batch_id=batch_id),
                           BATCH_RUNS_KEY.format(batch_id=batch_id), *lanes)
        self.client.zrem(DISPATCHING_KEY, batch_id)

    def create_batch(self, records: list[dict[str, str]], batch: dict[str, Any]) -> None:
        """The batch and its runs in one transaction: all or nothing."""
        script = self.__dict__.get("_create_runs")
        if script is None:
            script = self.__dict__["_create_runs"] = self.client.register_script(CREATE_RUNS)
        batch_id = batch["batch_id"]
        ttl = UNFINISHED_RUN_TTL_S + self.ttl_s
        runs_key = BATCH_RUNS_KEY.format(batch_id=batch_id)
        pipe = self.client.pipeline(transaction=True)
        pipe.hset(BATCH_KEY.format(batch_id=batch_id),
                  mapping={k: dumps(v) for k, v in batch.items()})
        pipe.expire(BATCH_KEY.format(batch_id=batch_id), ttl)
        first = records[0]
        shared = {k: v for k, v in first.items()
                  if k != "run_id" and all(r.get(k) == v for r in records)}
        created_ts = first["created_ts"]  # the score of a run whose own is shared
        own = [{k: v for k, v in r.items() if k not in shared} for r in records]
        for start in range(0, len(own), CREATE_CHUNK):
            script(keys=[RUNS_INDEX_KEY, runs_key],
                   args=[ttl, RUN_KEY.format(run_id=""), created_ts, dumps(shared),
                         *map(dumps, own[start : start + CREATE_CHUNK])],
                   client=pipe)
        pipe.expire(runs_key, ttl)
        if "dispatch_queues" in batch:
            _push_lanes(pipe, batch_id, records, ttl)
        count_submitted(pipe, records)
        pipe.execute()

    def dispatch_chunk(self, batch_id: str, size: int, now: float, ahead: int | None = None,
                       queue: str | None = None) -> tuple[int, int, list | None]:
        out = self._dispatch_chunk(
            keys=[BATCH_KEY.format(batch_id=batch_id), BATCH_RUNS_KEY.format(batch_id=batch_id),
                  QUEUED_KEY, lane_key(batch_id, queue or "")],
            args=[size, now, ahead or 2**31, queue or ""])
        cursor, total = int(_s(out[0])), int(_s(out[1]))
        if len(out) == 3:  # 'wait': `ahead` sent messages still wait
            return cursor, total, None
        runs = [(_s(out[i]), _json(out[i + 1]), _json(out[i + 2]), _s(out[i + 3]))
                for i in range(2, len(out), 4)]
        return cursor, total, runs

    def dispatch_waiting(self, batch_id: str, queue: str | None = None) -> int:
        """How many of the batch's (or its lane's) sent messages still wait (their runs queued):
        the runs queued less those the dispatch has not reached."""
        fields = ("n:queued", "total", "dispatched")
        values = self.client.hmget(BATCH_KEY.format(batch_id=batch_id), *fields,
                                   *[f"{f}@{queue}" for f in fields if queue])
        if len(values) > 3 and values[4] is not None:  # the batch has a lane on `queue`
            values = values[3:]
        queued, total, dispatched = (int(_s(v) or 0) for v in values[:3])
        return queued - (total - dispatched)

    def dispatch_lanes(self, batch_id: str) -> list[str]:
        """The queues whose dispatch of the batch has runs left to send."""
        key = BATCH_KEY.format(batch_id=batch_id)
        total, dispatched, queue = self.client.hmget(key, "total", "dispatched", "dispatch_queue")
        if total is None or int(_s(dispatched) or 0) >= int(_s(total)):
            return []
        lanes = self._lanes(batch_id)
        if not lanes:
            return [_json(queue) or "default"]
        values = self.client.hmget(key, *[f"{f}@{q}" for q in lanes
                                          for f in ("total", "dispatched")])
        return [q for i, q in enumerate(lanes)
                if int(_s(values[2 * i + 1]) or 0) < int(_s(values[2 * i]) or 0)]

    def stop_dispatch(self, batch_id: str) -> None:
        """Every cursor to its end (no claim sends more) and out of the dispatching set, at once."""
        key = BATCH_KEY.format(batch_id=batch_id)
        lanes = self._lanes(batch_id)
        fields = ["total", *[f"total@{q}" for q in lanes]]
        totals = self.client.hmget(key, *fields)
        pipe = self.client.pipeline(transaction=True)
        if totals[0] is not None:
            pipe.hset(key, mapping={f.replace("total", "dispatched", 1): t
                                    for f, t in zip(fields, totals, strict=True)})
        if lanes:
            pipe.delete(*[lane_key(batch_id, q) for q in lanes])
        pipe.zrem(DISPATCHING_KEY, batch_id)
        pipe.execute()

    def dispatch_pending(self, batch_id: str, stale_at: float) -> bool:
        return bool(self._dispatch_state(
            keys=[BATCH_KEY.format(batch_id=batch_id), DISPATCHING_KEY],
            args=[batch_id, "" if stale_at is None else stale_at]))

    def dispatch_done(self, batch_id: str) -> None:
        self.dispatch_pending(batch_id, None)

    def stalled_dispatches(self, now: float) -> list[str]:
        return [_s(m) for m in self.client.zrangebyscore(DISPATCHING_KEY, "-inf", now, start=0,
                                                           num=STALLED_DISPATCHES_READ)]

    def batch_frames(self, batch_id: str, after: int, limit: int) -> list[dict[str, Any]]:
        entries = self.client.xrange(BATCH_EVENTS_KEY.format(batch_id=batch_id), f"(0-{after}",
                                     "+", count=limit)
        return [json.loads(fields[FRAME_FIELD]) for _id, fields in entries]

    def batch_results(self, batch_id: str, start: int, stop: int) -> list[dict[str, Any]]:
        ids = [_s(r) for r in self.client.lrange(BATCH_RUNS_KEY.format(batch_id=batch_id),
                                                 start, stop - 1)]
        pipe = self.client.pipeline(transaction=False)
        for run_id in ids:
            pipe.hmget(RUN_KEY.format(run_id=run_id), "status", "output", "error")
        return [result_of(start + i, run_id, _s(status), _json(output), _json(error))
                for i, (run_id, (status, output, error)) in enumerate(
                    zip(ids, pipe.execute() if ids else [], strict=True))]


def _push_lanes(pipe: Any, batch_id: str, records: list[dict[str, str]], ttl: int) -> None:
    """Each queue's run ids of a batch on several queues, in submit order (its lanes)."""
    lanes: dict[str, list[str]] = {}
    for record in records:
        lanes.setdefault(record["queue"], []).append(_s(record["run_id"]).strip('"'))
    for queue, ids in lanes.items():
        key = lane_key(batch_id, json.loads(queue))
        for start in range(0, len(ids), CREATE_CHUNK):
            pipe.rpush(key, *ids[start : start + CREATE_CHUNK])
        pipe.expire(key, ttl)


class MemoryBatches:
    """Mixed into MemoryRunStore (which sets `_runs`, `_batches`, `_batch_runs`, `_changed`)."""

    _runs: dict
    _batches: dict
    _batch_runs: dict
    _changed: Any

    def _frames(self, batch_id: str) -> list[dict[str, Any]]:
        logs = self.__dict__.setdefault("_batch_logs", {})
        return logs.setdefault(batch_id, [])

    def _batch_log(self, run: dict[str, Any], old: str, new: str) -> None:
        """As tasks/lua.py BATCH_LOG; called under the store's lock."""
        batch = self._batches.get(run.get("batch_id"))
        if batch is None:
            return
        batch_id = batch["batch_id"]
        batch[f"n:{old}"] = batch.get(f"n:{old}", 0) - 1
        batch[f"n:{new}"] = batch.get(f"n:{new}", 0) + 1
        frames = self._frames(batch_id)
        frames.append({"seq": len(frames) + 1, "event": "run", "data": {
            "batch_id": batch_id, "index": run.get("index"), "run_id": run["run_id"],
            "status": new}})
        batch["log_seq"] = len(frames)
        if new not in ENDED:
            return
        counts = {s: batch[f"n:{s}"] for s in BATCH_STATUSES if batch.get(f"n:{s}", 0) > 0}
        if sum(counts.get(s, 0) for s in ENDED) >= batch["total"]:
            batch["finished_at"] = run.get("finished_at")
            frames.append({"seq": len(frames) + 1, "event": "done", "data": {
                "batch_id": batch_id, "total": batch["total"], "counts": counts}})
            batch["log_seq"] = len(frames)

    def cancel_many(self, run_ids: list[str], reason: str | None,
                    cancelled: dict[str, tuple[str, str]], finished_at: str) -> None:
        for run_id in run_ids:
            self.cancel(run_id, reason, cancelled[run_id], finished_at)

    def forget_batch(self, batch_id: str) -> None:
        with self._changed:
            self._batches.pop(batch_id, None)
            self._batch_runs.pop(batch_id, None)

    def dispatch_chunk(self, batch_id: str, size: int, now: float, ahead: int | None = None,
                       queue: str | None = None) -> tuple[int, int, list | None]:
        with self._changed:
            batch = self._batches.get(batch_id)
            if batch is None:
                return 0, 0, []
            start = batch["dispatched"]
            if (ahead is not None and start < batch["total"]
                    and batch.get("n:queued", 0) - (batch["total"] - start) >= ahead):
                return start, batch["total"], None  # as the Redis store: enough wait
            stop = min(start + size, batch["total"])
            batch["dispatched"] = max(start, stop)
            runs = []
            for run_id in self._batch_runs.get(batch_id, [])[start:stop]:
                run = self._runs.get(run_id)
                if run is not None and run["status"] == "queued":
                    runs.append((run_id, run["agent"], run.get("queue"), dumps(run["input"])))
            return batch["dispatched"], batch["total"], runs

    def dispatch_waiting(self, batch_id: str, queue: str | None = None) -> int:
        with self._changed:
            batch = self._batches.get(batch_id)
            if batch is None:
                return 0
            return batch.get("n:queued", 0) - (batch["total"] - batch["dispatched"])

    def stop_dispatch(self, batch_id: str) -> None:
        with self._changed:
            batch = self._batches.get(batch_id)
            if batch is not None:
                batch["dispatched"] = batch["total"]

    def batch_frames(self, batch_id: str, after: int, limit: int) -> list[dict[str, Any]]:
        with self._changed:
            return [dict(f) for f in self._frames(batch_id)[after : after + limit]]

    def batch_results(self, batch_id: str, start: int, stop: int) -> list[dict[str, Any]]:
        with self._changed:
            ids = self._batch_runs.get(batch_id, [])[start:stop]
            out = []
            for i, run_id in enumerate(ids):
                run = self._runs.get(run_id) or {}
                out.append(result_of(start + i, run_id, run.get("status"), run.get("output"),
                                     run.get("error")))
            return out
