"""The batch dispatch's order of messages, on the memory store's batch code and a recording app:
the next dispatch goes out amid the batch's messages, once, and the backlog stays bounded."""

from __future__ import annotations

import threading
from contextlib import contextmanager
from types import SimpleNamespace

from streaming.constants import BATCH_DISPATCH_AHEAD, BATCH_DISPATCH_CHUNK
from tasks.batch_store import MemoryBatches, batch_fields
from tasks.dispatch import DISPATCH_TASK, dispatch


class Store(MemoryBatches):
    def __init__(self, total: int) -> None:
        self._runs = {f"r{i}": {"run_id": f"r{i}", "agent": "echo", "status": "queued",
                                "input": {"i": i}} for i in range(total)}
        self._batches = {"b": batch_fields("b", total, "now", {})}
        self._batch_runs = {"b": list(self._runs)}
        self._changed = threading.Condition(threading.RLock())

    def dispatch_pending(self, batch_id, stale_at) -> None:
        pass

    def dispatch_done(self, batch_id) -> None:
        self.done = True

    def take(self, n: int) -> None:
        """A worker claims the first `n` queued runs that were sent."""
        batch = self._batches["b"]
        for run_id in self._batch_runs["b"][: batch["dispatched"]]:
            if n and self._runs[run_id]["status"] == "queued":
                self._runs[run_id]["status"] = "running"
                batch["n:queued"] -= 1
                n -= 1


def recording_runtime(store: Store, sent: list) -> SimpleNamespace:
    @contextmanager
    def producer_or_acquire():
        yield SimpleNamespace()  # no publish batch: one by one

    def send_task(name, args, queue, countdown=None, producer=None, task_id=None):
        assert name == DISPATCH_TASK and args == ["b", None]
        sent.append(("dispatch", countdown))

    def enqueue(run_id, agent, producer=None, queue=None, input_json=None):
        sent.append(("run", run_id))

    app = SimpleNamespace(producer_or_acquire=producer_or_acquire, send_task=send_task)
    return SimpleNamespace(store=store, app=app, enqueue=enqueue)


def test_the_next_dispatch_is_sent_amid_the_messages_once_and_the_backlog_stays_bounded():
    total = 3 * BATCH_DISPATCH_AHEAD
    store, sent = Store(total), []
    rt = recording_runtime(store, sent)
    dispatch(rt, "b", budget_s=60)
    runs = [m for kind, m in sent if kind == "run"]
    nexts = [i for i, (kind, _) in enumerate(sent) if kind == "dispatch"]
    assert len(nexts) == 1, "one dispatch message of the batch at a time"
    assert BATCH_DISPATCH_AHEAD <= len(runs) < BATCH_DISPATCH_AHEAD + BATCH_DISPATCH_CHUNK
    assert BATCH_DISPATCH_AHEAD // 2 <= nexts[0] < len(runs), "amid the batch's messages"
    assert sent[nexts[0]][1] is None  # taken as soon as the workers reach it
    assert runs == [f"r{i}" for i in range(len(runs))], "in submit order"

    # The workers reach the next dispatch: what was sent before it is taken.
    store.take(nexts[0])
    sent.clear()
    dispatch(rt, "b", budget_s=60)
    assert [kind for kind, _ in sent].count("dispatch") == 1
    assert sent[0][0] == "run" and sent[-1][0] == "run"

    # Nothing taken since: the next one finds enough waiting and comes back after a pause.
    sent.clear()
    dispatch(rt, "b", budget_s=60)
    assert len(sent) == 1 and sent[0][0] == "dispatch" and sent[0][1]


def test_a_dispatch_whose_batch_ends_sends_no_next_one_after_its_last_chunk():
    store, sent = Store(BATCH_DISPATCH_CHUNK + 7), []
    dispatch(recording_runtime(store, sent), "b", budget_s=60)
    assert [kind for kind, _ in sent].count("run") == BATCH_DISPATCH_CHUNK + 7
    assert [kind for kind, _ in sent].count("dispatch") == 0 and store.done
