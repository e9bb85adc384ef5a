"""The Redis run store's Lua scripts (tasks/scripts/*.lua), built once at import.

Every status change is one atomic script. A terminal event is appended to the run's stream by the
same script that writes the terminal status, so the event is in the log no later than the status,
and a run never gets two. Events go through the one append routine the event writer uses
(streaming/scripts/events.lua). The constants the scripts read come from streaming.constants.
"""

from streaming.constants import (
    BATCH_EVENTS_CHANNEL,
    BATCH_EVENTS_KEY,
    BATCH_KEY,
    BATCH_RUNS_KEY,
    EVENT_FIELD,
    METRICS_EVENTS_KEY,
    METRICS_FINISHED_KEY,
    METRICS_RUN_DURATION_KEY,
    METRICS_RUN_QUEUE_KEY,
    RUN_DURATION_BUCKETS_S,
    RUN_KEY,
    RUN_QUEUE_BUCKETS_S,
    WEBHOOKS_DUE_KEY,
)
from streaming.lua_scripts import EVENTS_LIBRARY, build_script, read_lua


def _bounds(bounds: tuple[float, ...]) -> list[float | str]:
    """Histogram upper bounds as a flat list of (number, its label) pairs."""
    return [item for bound in bounds for item in (bound, f"{bound:g}")]


CONSTANTS = {
    "EVENT_FIELD": EVENT_FIELD,
    "RUN_PREFIX": RUN_KEY.format(run_id=""),
    "BATCH_PREFIX": BATCH_KEY.format(batch_id=""),
    "BATCH_RUNS_PREFIX": BATCH_RUNS_KEY.format(batch_id=""),
    "BATCH_LOG_PREFIX": BATCH_EVENTS_KEY.format(batch_id=""),
    "BATCH_CHANNEL_PREFIX": BATCH_EVENTS_CHANNEL.format(batch_id=""),
    "WEBHOOKS_DUE_KEY": WEBHOOKS_DUE_KEY,
    "METRICS_RUN_QUEUE_KEY": METRICS_RUN_QUEUE_KEY,
    "METRICS_RUN_DURATION_KEY": METRICS_RUN_DURATION_KEY,
    "METRICS_FINISHED_KEY": METRICS_FINISHED_KEY,
    "METRICS_EVENTS_KEY": METRICS_EVENTS_KEY,
    "RUN_QUEUE_BOUNDS": _bounds(RUN_QUEUE_BUCKETS_S),
    "RUN_DURATION_BOUNDS": _bounds(RUN_DURATION_BUCKETS_S),
}


def _script(*names: str, events: bool = False) -> str:
    """A script from tasks/scripts/ (libraries first, the body last); `events`: it appends run
    events (the event log's routine, then add_event)."""
    sources = [read_lua("tasks", name) for name in names]
    if events:
        sources = [EVENTS_LIBRARY, read_lua("tasks", "add_event.lua"), *sources]
    return build_script(sources, CONSTANTS)


_ENDING = ("end_in_batch.lua", "webhook_due.lua", "metrics.lua", "batch_log.lua")

CLAIM = _script("metrics.lua", "batch_log.lua", "claim.lua", events=True)
FINISH = _script(*_ENDING, "finish.lua", events=True)
CANCEL = _script(*_ENDING, "cancel.lua", events=True)
REAP = _script("batch_log.lua", "reap.lua")
HEARTBEAT = _script("heartbeat.lua")
DISPATCH_CHUNK = _script("dispatch_chunk.lua")
DISPATCH_STATE = _script("dispatch_state.lua")
