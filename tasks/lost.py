"""Runs whose broker message was lost: queued in the run store, nowhere in the broker.

Celery's Redis transport takes a message off its queue with BRPOP and records it as
unacknowledged only once the worker has read the reply. A worker killed (or whose connection is
cut) in between loses the message, and its run would stay `queued` forever. So every enqueue notes
the run in QUEUED_KEY, and the reaper (at most every LOST_SWEEP_INTERVAL_S) looks at the runs
noted more than LOST_AFTER_S ago: those no longer queued are forgotten, and those still queued
whose message is neither on their queue nor unacknowledged (one atomic Lua look at the broker)
are sent again. Sending a message that was in flight after all only makes a second delivery,
which the fenced claim (tasks/lua.py CLAIM: queued, attempt + 1) skips.

A message held unacknowledged by a dead worker is not lost: kombu puts it back on its queue after
the visibility timeout (tasks/celeryapp.py).
"""

from __future__ import annotations

import json
import logging
from typing import Any

import redis

from streaming.constants import LOST_SWEEP_LOCK_KEY, QUEUED_KEY
from streaming.lua_scripts import build_script, read_lua
from tasks.constants import LOST_AFTER_S, LOST_SWEEP_BATCH, LOST_SWEEP_INTERVAL_S

log = logging.getLogger(__name__)


FIND_MESSAGES = build_script([read_lua("tasks", "find_messages.lua")])  # KEYS: queues, unacked


def _s(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class LostMessages:
    """What the reaper uses to find and resend the runs whose message was lost."""

    def __init__(self, rt: Any) -> None:
        self.rt = rt
        self.broker = self._broker_client(rt)
        self._find = self.broker.register_script(FIND_MESSAGES) if self.broker else None

    @staticmethod
    def _broker_client(rt: Any) -> redis.Redis | None:
        """A client of the broker when it is Redis (AMQP gives unacknowledged messages back)."""
        if rt.settings.embedded:  # the memory transport loses no message
            return None
        url = rt.settings.broker
        if url == rt.settings.redis_url:
            return rt.redis
        if url.startswith(("redis://", "rediss://", "unix://")):
            return redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=10)
        return None

    def sweep(self, now: float) -> list[str]:
        """Resend the runs whose message is lost; returns their ids."""
        rt = self.rt
        if self.broker is None or not rt.redis.set(LOST_SWEEP_LOCK_KEY, "1", nx=True,
                                                   px=int(LOST_SWEEP_INTERVAL_S * 1000)):
            return []
        due = [_s(m) for m in rt.redis.zrangebyscore(QUEUED_KEY, "-inf", now - LOST_AFTER_S,
                                                     start=0, num=LOST_SWEEP_BATCH)]
        if not due:
            return []
        runs = [run for run in rt.store.get_many(due) if run and run.get("status") == "queued"]
        waiting = {run["run_id"] for run in runs}
        if gone := [run_id for run_id in due if run_id not in waiting]:
            rt.redis.zrem(QUEUED_KEY, *gone)
        if not runs:
            return []
        present = {_s(r) for r in self._find(keys=self._keys(runs), args=sorted(waiting))}
        rt.store.note_queued(list(present), now)  # look again in LOST_AFTER_S
        lost = [run for run in runs if run["run_id"] not in present]
        for run in lost:
            attempt = int(run.get("attempt") or 0) + 1
            log.warning("run %s was queued but its message was lost; sending it again (attempt "
                        "%s)", run["run_id"], attempt)
            rt.store.note_queued([run["run_id"]], now)
            rt.enqueue(run["run_id"], run["agent"], attempt, queue=run.get("queue"),
                    input_json=json.dumps(run.get("input")))
        return [run["run_id"] for run in lost]

    def waiting(self, queue: str, task_ids: list[str]) -> set[str] | None:
        """Which of `task_ids` a message on `queue` (or unacknowledged) has: the reaper resends
        a stalled batch dispatch only when its message is not there (tasks.dispatch). None: the
        broker is not Redis, nothing to look at."""
        if self._find is None:
            return None
        return {_s(r) for r in self._find(keys=self._queue_keys([queue]), args=task_ids)}

    @staticmethod
    def _keys(runs: list[dict]) -> list[str]:
        return LostMessages._queue_keys({run.get("queue") or "default" for run in runs})

    @staticmethod
    def _queue_keys(queues) -> list[str]:
        from kombu.transport.redis import PRIORITY_STEPS, Channel

        queues = sorted(queues)
        keys = [q if not p else f"{q}{Channel.sep}{p}" for q in queues for p in PRIORITY_STEPS]
        return [*keys, Channel.unacked_key]
