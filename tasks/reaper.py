"""The reaper: a loop in every worker that finds runs whose worker died (requeued for a new
attempt, or failed), batches whose dispatch stalled, and runs whose broker message was lost."""

from __future__ import annotations

import logging
import os
import time
from typing import TYPE_CHECKING

from streaming.constants import HEARTBEAT_STALE_S, REAPER_INTERVAL_S, UNFINISHED_RUN_TTL_S
from streaming.events import dumps, envelope_parts, utc_now_iso
from tasks.constants import REAPER_LOCK_MS, WORKER_ALIVE_S
from tasks.dispatch import resume_stalled
from tasks.lost import LostMessages
from tasks.worker_side import Loop

if TYPE_CHECKING:
    from tasks.runtime import Runtime

log = logging.getLogger(__name__)


class Reaper(Loop):
    """Finds runs whose worker died: requeues them (a new attempt) or fails them."""

    def __init__(self, rt: Runtime, hostname: str | None) -> None:
        super().__init__("runcast-reaper", REAPER_INTERVAL_S)
        self.rt = rt
        self.hostname = hostname or f"worker-{os.getpid()}"
        self.lost = LostMessages(rt)
        self.last_ok: float | None = None  # when a tick last reached the store
        self.hold_until = 0.0

    def tick(self) -> None:
        rt = self.rt
        now = time.time()
        rt.store.worker_seen(self.hostname, now, forget_before=now - WORKER_ALIVE_S)
        if self.last_ok is None or now - self.last_ok > 2 * REAPER_INTERVAL_S + 1:
            # Starting, or back from an outage that stopped every heartbeat too: give live
            # workers one stale period to refresh theirs before any run counts as lost.
            self.hold_until = now + HEARTBEAT_STALE_S
        self.last_ok = now
        if not rt.store.reaper_turn(self.hostname, REAPER_LOCK_MS):
            return
        if now >= self.hold_until:
            for run_id in rt.store.stale(now):
                reap_one(rt, run_id, now)
        rt.store.expire_index(now - UNFINISHED_RUN_TTL_S - rt.settings.run_ttl)
        rt.store.prune_index(now - rt.settings.run_ttl)
        self.lost.sweep(now)  # queued runs whose broker message was lost
        resume_stalled(rt, now, self.lost.waiting)  # batches whose dispatch stopped


def reap_one(rt: Runtime, run_id: str, now: float) -> None:
    result = rt.store.reap(run_id, now, rt.settings.max_attempts)
    if result.state == "requeue":
        run = rt.store.get(run_id)
        log.warning("run %s lost its worker on attempt %s; running it again", run_id, result.seq)
        rt.store.note_queued([run_id], now)
        rt.enqueue(run_id, run["agent"], result.seq + 1, queue=run.get("queue"),
                input_json=dumps(run.get("input")))
    elif result.state in ("lost", "timeout"):
        if result.state == "lost":
            message = f"the worker running this run was lost (attempt {result.seq})"
            data = {"error": message, "code": "worker_lost", "details": {"attempt": result.seq}}
        else:
            message = "the run took longer than its timeout"
            data = {"error": message, "code": "timeout", "details": {}}
        log.warning("run %s failed: %s", run_id, message)
        rt.store.finish(
            run_id, "failed", envelope_parts(run_id, "error", data),
            {"error": data, "finished_at": utc_now_iso()}, attempt=result.seq,
        )

