"""Where webhook messages wait: a schedule of due deliveries, claimed with a lease.

Redis: the zset WEBHOOKS_DUE_KEY holds `run:<id>` / `batch:<id>` scored by when the next attempt
is due (Redis server time). The scripts that turn a run terminal add it (tasks/lua.py
WEBHOOK_DUE), so a run never ends without its delivery being due. A worker claims due members
by moving their score past a lease; a worker that dies mid-attempt leaves its members to come due
again when the lease runs out, so a message is delivered at least once. Each message (id, URL,
body, status) is kept in WEBHOOK_MESSAGE_KEY once made, and its status mirrored to the run's (or
batch's) `webhook_status`.

Memory (embedded mode): the same, kept beside the MemoryRunStore under its lock.
"""

from __future__ import annotations

import json
import time
from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any

import redis

from streaming.constants import (
    BATCH_KEY,
    RUN_KEY,
    WEBHOOK_MESSAGE_KEY,
    WEBHOOK_MESSAGE_TTL_S,
    WEBHOOKS_DUE_KEY,
)
from streaming.events import dumps
from streaming.lua_scripts import build_script, read_lua
from tasks.metrics import delivery_outcome, webhook_delivery_command
from tasks.webhooks import BATCH_MEMBER, RUN_MEMBER, Message, batch_member, run_member

if TYPE_CHECKING:
    from tasks.memory_store import MemoryRunStore

CLAIM_DUE = build_script([read_lua("tasks", "webhook_claim_due.lua")])
KEEP_MESSAGE = build_script([read_lua("tasks", "webhook_keep_message.lua")])
RECORD = build_script([read_lua("tasks", "webhook_record.lua")])


class WebhookQueue(ABC):
    """The due schedule and the kept messages; tasks.webhook_delivery runs the algorithm."""

    @abstractmethod
    def claim(self, count: int, lease_s: float) -> list[str]:
        """Up to `count` members due now, each leased for `lease_s` seconds."""

    @abstractmethod
    def message(self, member: str) -> Message | None:
        """The message made for `member` at an earlier attempt, if any."""

    @abstractmethod
    def keep(self, member: str, message: Message) -> Message:
        """Keep `message` unless one was kept already (two makers agree); returns the kept one."""

    @abstractmethod
    def record(self, member: str, status: dict[str, Any], pause_s: float | None) -> None:
        """Store the new status (also as the owner's `webhook_status`); `pause_s` None ends the
        delivery, else the next attempt is due that many seconds from now."""

    @abstractmethod
    def drop(self, member: str) -> None:
        """Forget a member whose run or batch is gone."""


def _s(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def owner_key(member: str) -> str:
    if member.startswith(BATCH_MEMBER):
        return BATCH_KEY.format(batch_id=member[len(BATCH_MEMBER):])
    return RUN_KEY.format(run_id=member[len(RUN_MEMBER):])


class RedisWebhookQueue(WebhookQueue):
    def __init__(self, client: redis.Redis, *, ttl_s: int) -> None:
        self.client = client
        self.ttl_s = ttl_s  # an ended message is kept as long as its run
        self._claim = client.register_script(CLAIM_DUE)
        self._keep = client.register_script(KEEP_MESSAGE)
        self._record = client.register_script(RECORD)

    def claim(self, count: int, lease_s: float) -> list[str]:
        return [_s(m) for m in self._claim(keys=[WEBHOOKS_DUE_KEY], args=[count, lease_s])]

    @staticmethod
    def _decode(raw: dict | list) -> Message | None:
        if isinstance(raw, list):  # HGETALL through a script: a flat list
            raw = dict(zip(raw[::2], raw[1::2], strict=True))
        fields = {_s(k): _s(v) for k, v in raw.items()}
        if not fields.get("id"):
            return None
        return Message(id=fields["id"], url=fields["url"], body=fields["body"],
                       status=json.loads(fields["status"]))

    def message(self, member: str) -> Message | None:
        return self._decode(self.client.hgetall(WEBHOOK_MESSAGE_KEY.format(member=member)))

    def keep(self, member: str, message: Message) -> Message:
        raw = self._keep(keys=[WEBHOOK_MESSAGE_KEY.format(member=member)], args=[
            WEBHOOK_MESSAGE_TTL_S, "id", message.id, "url", message.url, "body", message.body,
            "status", dumps(message.status),
        ])
        return self._decode(raw)

    def record(self, member: str, status: dict[str, Any], pause_s: float | None) -> None:
        pipe = self.client.pipeline(transaction=False)
        self._record(
            keys=[WEBHOOKS_DUE_KEY, WEBHOOK_MESSAGE_KEY.format(member=member), owner_key(member)],
            args=[member, dumps(status), "" if pause_s is None else repr(float(pause_s)),
                  self.ttl_s],
            client=pipe,
        )
        if (outcome := delivery_outcome(status, pause_s)) is not None:
            webhook_delivery_command(pipe, outcome)  # runcast_webhook_deliveries_total
        pipe.execute()

    def drop(self, member: str) -> None:
        self.client.zrem(WEBHOOKS_DUE_KEY, member)


class MemoryWebhookQueue(WebhookQueue):
    """Embedded mode: lives in the MemoryRunStore and shares its lock."""

    def __init__(self, store: MemoryRunStore) -> None:
        self.store = store
        self._due: dict[str, float] = {}
        self._messages: dict[str, Message] = {}
        self._batch_ended: dict[str, int] = {}

    def run_ended(self, run_id: str, run: dict[str, Any]) -> None:
        """Called by the store, under its lock, as a run turns terminal."""
        now = time.time()
        if run.get("webhook"):
            self._due.setdefault(run_member(run_id), now)
        batch_id = run.get("batch_id")
        batch = self.store._batches.get(batch_id) if batch_id else None
        if batch is None:
            return
        ended = self._batch_ended[batch_id] = self._batch_ended.get(batch_id, 0) + 1
        if batch.get("webhook") and ended >= batch["total"]:
            self._due.setdefault(batch_member(batch_id), now)

    def claim(self, count: int, lease_s: float) -> list[str]:
        with self.store._changed:
            now = time.time()
            due = sorted((at, member) for member, at in self._due.items() if at <= now)
            members = [member for _, member in due[:count]]
            for member in members:
                self._due[member] = now + lease_s
            return members

    def message(self, member: str) -> Message | None:
        with self.store._changed:
            return self._messages.get(member)

    def keep(self, member: str, message: Message) -> Message:
        with self.store._changed:
            return self._messages.setdefault(member, message)

    def record(self, member: str, status: dict[str, Any], pause_s: float | None) -> None:
        if (outcome := delivery_outcome(status, pause_s)) is not None:
            self.store.metrics_counters.webhook_delivery(outcome)
        with self.store._changed:
            if member in self._messages:
                self._messages[member] = self._messages[member].with_status(status)
            if member.startswith(BATCH_MEMBER):
                owner = self.store._batches.get(member[len(BATCH_MEMBER):])
            else:
                owner = self.store._runs.get(member[len(RUN_MEMBER):])
            if owner is not None:
                owner["webhook_status"] = status
            if pause_s is None:
                self._due.pop(member, None)
                self._messages.pop(member, None)
            elif member in self._due:
                self._due[member] = time.time() + pause_s
            self.store._changed.notify_all()

    def drop(self, member: str) -> None:
        with self.store._changed:
            self._due.pop(member, None)
            self._messages.pop(member, None)
