"""Which workers settle their garbage collector (tasks/heap.py); a threads-pool worker that did
is checked in tests/test_aio_pool.py."""

from __future__ import annotations

from celery.concurrency.prefork import TaskPool as PreforkPool
from celery.concurrency.solo import TaskPool as SoloPool
from celery.concurrency.thread import TaskPool as ThreadsPool

from tasks.heap import many_runs_per_process


def test_only_a_threads_pool_runs_many_runs_in_the_worker_process():
    threads = ThreadsPool(limit=2)
    try:
        assert many_runs_per_process(threads)
    finally:
        threads.executor.shutdown(wait=False)
    assert not many_runs_per_process(PreforkPool(limit=2))  # its children run the tasks
    assert not many_runs_per_process(SoloPool(limit=1))
    assert not many_runs_per_process(None)
