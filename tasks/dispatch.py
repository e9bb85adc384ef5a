"""Sending a batch's broker messages from the workers, in submit order, in chunks.

`POST /batches` stores the runs and sends one message: the task `runcast.dispatch_batch`. The
worker that takes it claims chunks of BATCH_DISPATCH_CHUNK runs with one Lua script (the batch's
cursor moves on and the claimed runs are noted in QUEUED_KEY in the same step) and sends their
messages through `tasks.broker.enqueue`, the one function that builds a run's message. After
BATCH_DISPATCH_BUDGET_S it stops, so one batch never holds a worker process for long; and while
BATCH_DISPATCH_AHEAD of the batch's messages still wait in the broker it claims no more (the
backlog stays short: the lost-message sweep, which scans the broker's queues, stays cheap). It
sends itself again for the rest once half that many wait, between its chunks, so that the next
dispatch comes out of the queue while messages still wait behind it (see `dispatch`).

A worker that dies mid-dispatch loses nothing:
- runs of a claimed chunk whose message was not sent are queued in the store and noted in
  QUEUED_KEY: the lost-message sweep (tasks.lost) sends them again; a message that was sent after
  all only makes a second delivery, which the fenced claim skips (a run never runs twice);
- the dispatch task itself is acknowledged late, so the broker gives it to another worker, and the
  reaper resumes any batch whose dispatch made no progress for BATCH_DISPATCH_STALE_S (its
  message lost too); the cursor is claimed atomically, so two dispatchers never send one chunk.

A batch whose runs go to several queues is dispatched in lanes, one per queue: the lane's
dispatch task goes to that queue and sends that queue's runs only (in submit order). A worker that
takes it consumes the queue, so a queue no worker consumes holds back its own runs alone, never
those of the other queues (the dispatch needs no agent's code: tasks.broker.enqueue sends by name).
Each lane's dispatch message has one task id (dispatch_task_id), so the reaper sends a lane's
dispatch again only when its message is nowhere in the broker: one waiting on a queue no worker
consumes is left alone, not joined by another each minute.

Cancelling a batch moves its cursors to the end first (tasks.service.cancel_batch), so no more of
its messages go out, takes it out of the dispatching set (never resumed), and then cancels its
queued runs.

Embedded mode (memory://) sends the messages directly, within the request.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from celery import Celery

from streaming.constants import (
    BATCH_DISPATCH_AHEAD,
    BATCH_DISPATCH_BUDGET_S,
    BATCH_DISPATCH_CHUNK,
    BATCH_DISPATCH_PAUSE_S,
    BATCH_DISPATCH_STALE_S,
)
from tasks.broker import one_round_trip
from tasks.errors import BrokerUnavailable

if TYPE_CHECKING:
    from tasks.runtime import Runtime

log = logging.getLogger(__name__)

DISPATCH_TASK = "runcast.dispatch_batch"


def start_dispatch(rt: Runtime, batch_id: str, queues: list[str] | None = None) -> None:
    """Called once the batch is stored: hand its dispatch to the workers, one task to each of
    its `queues` (embedded: do it)."""
    if rt.settings.embedded:
        dispatch(rt, batch_id, budget_s=None)
        return
    rt.store.dispatch_pending(batch_id, time.time() + BATCH_DISPATCH_STALE_S)
    for queue in queues or ["default"]:
        _send(rt, batch_id, queue)


def dispatch_task_id(batch_id: str, queue: str | None) -> str:
    """The task id of every dispatch message of the batch's lane on `queue`: the reaper finds
    it in the broker by this id (tasks.lost), so it sends no second one while one waits."""
    digest = hashlib.sha1((queue or "default").encode()).hexdigest()[:12]
    return f"{batch_id}-dispatch-{digest}"


def _send(rt: Runtime, batch_id: str, queue: str | None, countdown: float | None = None,
          producer=None) -> None:
    try:
        rt.app.send_task(DISPATCH_TASK, args=[batch_id, queue], queue=queue or "default",
                         task_id=dispatch_task_id(batch_id, queue), countdown=countdown,
                         producer=producer)
    except Exception as exc:
        raise BrokerUnavailable(f"the broker did not take the batch: {exc}") from exc


def dispatch(rt: Runtime, batch_id: str, budget_s: float | None = BATCH_DISPATCH_BUDGET_S,
             queue: str | None = None) -> int:
    """Send chunks of the batch's messages (those of its lane on `queue`, if it has lanes)
    until all are sent or `budget_s` is spent (then the task is sent again for the rest).
    Returns how many messages were sent.

    The task sends itself again once BATCH_DISPATCH_AHEAD / 2 of the batch's messages wait,
    between the chunks: the next dispatch is taken from the queue while the messages sent after
    it still wait, so the workers never run dry between two dispatches (sent behind all of them,
    it found the queue empty and the pool idle while it claimed and sent its first chunk). Each
    execution sends itself again at most once: one dispatch message of the batch at a time."""
    until = None if budget_s is None else time.monotonic() + budget_s
    sent = 0
    followed = False  # this execution's next one is sent
    with rt.app.producer_or_acquire() as producer:
        while True:
            cursor, total, runs = rt.store.dispatch_chunk(
                batch_id, BATCH_DISPATCH_CHUNK, time.time(),
                None if budget_s is None else BATCH_DISPATCH_AHEAD, queue)
            if runs is None:  # enough of its messages wait: come back behind them
                if not followed:
                    rt.store.dispatch_pending(batch_id, time.time() + BATCH_DISPATCH_STALE_S)
                    _send(rt, batch_id, queue, countdown=BATCH_DISPATCH_PAUSE_S,
                          producer=producer)
                return sent
            with one_round_trip(producer, 2 * BATCH_DISPATCH_CHUNK):
                for run_id, agent, run_queue, input_json in runs:
                    rt.enqueue(run_id, agent, producer=producer, queue=run_queue,
                               input_json=input_json)
            sent += len(runs)
            if cursor >= total:
                rt.store.dispatch_done(batch_id)  # leaves the set once every lane is done
                return sent
            rt.store.dispatch_pending(batch_id, time.time() + BATCH_DISPATCH_STALE_S)
            if until is None:
                continue
            if not followed and rt.store.dispatch_waiting(batch_id, queue) >= BATCH_DISPATCH_AHEAD // 2:
                _send(rt, batch_id, queue, producer=producer)  # amid the batch's messages
                followed = True
            if time.monotonic() >= until:
                if not followed:
                    _send(rt, batch_id, queue, producer=producer)
                return sent


def register_dispatch_task(app: Celery, runtime: Callable[[], Runtime]) -> None:
    """`runcast.dispatch_batch` on `app`, dispatching with `runtime()`."""

    @app.task(name=DISPATCH_TASK, acks_late=True, reject_on_worker_lost=True, ignore_result=True,
              max_retries=0, shared=False)
    def dispatch_batch(batch_id: str, queue: str | None = None) -> int:
        return dispatch(runtime(), batch_id, queue=queue)


Waiting = Callable[[str, list[str]], "set[str] | None"]


def resume_stalled(rt: Runtime, now: float, waiting: Waiting | None = None) -> list[str]:
    """The reaper's safety net: each lane of a batch whose dispatch made no progress lately gets
    a new dispatch task if its earlier message was lost. `waiting(queue, task_ids)` tells which
    of those messages are still in the broker (tasks.lost; None: it cannot look, so each is sent
    again). A batch gone, wholly sent or cancelled leaves the dispatching set instead. Returns
    the ids of the batches resumed."""
    resumed = []
    for batch_id in rt.store.stalled_dispatches(now):
        if not rt.store.dispatch_pending(batch_id, now + BATCH_DISPATCH_STALE_S):
            continue  # nothing left to send: out of the set
        lost = []
        for queue in rt.store.dispatch_lanes(batch_id):
            task_id = dispatch_task_id(batch_id, queue)
            found = waiting(queue, [task_id]) if waiting is not None else None
            if found is None or task_id not in found:
                lost.append(queue)
        if lost:
            log.warning("the dispatch of batch %s made no progress; resuming it on %s",
                        batch_id, ", ".join(lost))
            for queue in lost:
                _send(rt, batch_id, queue)
            resumed.append(batch_id)
    return resumed
