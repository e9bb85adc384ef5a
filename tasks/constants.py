"""Limits and intervals of the Celery side (keys, channels and TTLs shared with the event log
are in streaming/constants.py). Units are in the names."""

# A message taken by a worker that died before it claimed the run (prefetched, or on its way to a
# pool process) comes back to its queue this long after its delivery: a live worker's kombu puts
# it back (checked every BROKER_RESTORE_INTERVAL_S). Redelivering the message of a run that is
# running or ended is harmless: the claim is fenced, so that execution is skipped.
BROKER_VISIBILITY_TIMEOUT_S = 45
BROKER_RESTORE_INTERVAL_S = 5

from streaming.constants import REAPER_INTERVAL_S

# The reaper's lock lasts 80% of its interval: one worker reaps per tick, and the lock is free
# again before the next tick of any worker.
REAPER_LOCK_MS = int(REAPER_INTERVAL_S * 800)
WORKER_ALIVE_S = 3 * REAPER_INTERVAL_S  # a worker counts as live this long after it reported

# Lost broker messages (tasks/lost.py)
LOST_AFTER_S = 20.0  # a queued run is looked for in the broker once it waited this long
LOST_SWEEP_INTERVAL_S = 10.0
LOST_SWEEP_BATCH = 500  # runs looked at per sweep, the longest waiting first

BATCH_MAX_RUNS = 10_000  # runs in one batch
LIST_MAX_SCANNED = 20_000  # run records one list request looks at before it stops
MAX_IDLE_PUBSUBS = 8  # pub/sub connections kept for the next wait
HANDLER_THREADS_KEPT = 8  # idle handler threads kept for the next run
STALLED_DISPATCHES_READ = 100  # stalled batch dispatches the reaper resumes per tick
BROKER_FETCH_MAX = 64  # messages a worker's consumer takes from a queue per fetch (tasks/redis_transport.py)
GC_YOUNG_THRESHOLD = 20_000  # a worker's youngest GC generation, in net allocations (tasks/heap.py)
DRAIN_SLICE_S = 0.05  # the embedded broker's drain checks this often whether its worker stops
