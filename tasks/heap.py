"""The cyclic garbage collector of a worker process that runs many agents at once.

CPython collects its youngest generation every 700 net allocations of container objects, and
every tenth and hundredth time an older one; a full collection walks every tracked object,
including the ~170,000 that importing Celery, kombu, redis-py and pydantic leaves behind. A
worker running a thousand I/O-bound runs at once allocates a future, a timer and an envelope per
token, so it collects often, and every collection holds the GIL: Celery's consumer waits.

Measured on `benchmarks.io_bound`'s worker (1,000 runs x 20 tokens per side, gc.callbacks
timing each collection, five sides per worker): per side, 235-290 young, 21-26 middle and about
2 full collections, 0.39-0.47 s of CPU in all, the full ones about 120 ms each. With what is
alive once the worker is ready frozen (gc.freeze: modules, the app and its settings, never
garbage) and a youngest generation of GC_YOUNG_THRESHOLD objects: about 50 young, 4 middle and
0.4 full collections per side, 0.11-0.12 s, the longest about 90 ms. Wall time on that
benchmark moves more from run to run than this saves; the CPU is the measured gain.
"""

from __future__ import annotations

import gc

from tasks.constants import GC_YOUNG_THRESHOLD


def many_runs_per_process(pool: object) -> bool:
    """Whether a worker's pool runs its tasks in the worker's own process, many at once
    (Celery's threads pool, what `runcast worker --io-bound` runs): where this was measured to
    pay. A prefork worker's process only consumes; its children run one task each."""
    from celery.concurrency.thread import TaskPool

    return isinstance(pool, TaskPool)


def settle() -> None:
    """Freeze what is alive now out of every later collection; collect the young less often."""
    gc.collect()
    gc.freeze()
    young, middle, old = gc.get_threshold()
    gc.set_threshold(max(GC_YOUNG_THRESHOLD, young), middle, old)
