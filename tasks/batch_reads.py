"""Reading a batch: its results in submit order, and its log of status changes, replayed then live.

The batch log (tasks/lua.py BATCH_LOG) is a Redis Stream per batch, entry ids `0-<seq>`, each
entry also PUBLISHed on the batch's channel. A subscriber listens on the channel through the
event backend's pub/sub hub (one connection for every run and batch subscriber of a process),
reads the log after its point, then takes live frames, filling any gap from the log, until `done`.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from streaming.backends.base import RESYNC
from streaming.constants import BATCH_EVENTS_CHANNEL, BATCH_PAGE_RUNS, SUBSCRIBE_RESYNC_S
from tasks.errors import RunNotFound

if TYPE_CHECKING:
    from tasks.runtime import Runtime

MEMORY_POLL_S = 0.05  # embedded mode: how often a subscriber looks for new frames


def require_batch(rt: Runtime, batch_id: str) -> dict[str, Any]:
    batch = rt.store.batch(batch_id)
    if batch is None:
        raise RunNotFound(f"no batch {batch_id!r}")
    return batch


def results_page(rt: Runtime, batch_id: str, after: int = 0,
                 limit: int = BATCH_PAGE_RUNS) -> dict[str, Any]:
    """Results of the runs at index `after` onwards (`after` is an index + 1), in submit order;
    `done` when the page reaches the end and every run of the batch has ended."""
    batch = require_batch(rt, batch_id)
    total = int(batch["total"])
    results = rt.store.batch_results(batch_id, after, min(after + limit, total))
    next_after = after + len(results)
    done = next_after >= total and batch.get("finished_at") is not None
    return {"results": results, "next_after": next_after, "done": done}


def iter_results(rt: Runtime, batch_id: str, after: int = 0) -> Iterator[dict[str, Any]]:
    """Every result from index `after` on, read page by page (never the whole batch at once)."""
    total = int(require_batch(rt, batch_id)["total"])
    store = rt.store
    while after < total:
        page = store.batch_results(batch_id, after, min(after + BATCH_PAGE_RUNS, total))
        if not page:
            return
        yield from page
        after += len(page)


# -- the batch stream --------------------------------------------------------------------------

@asynccontextmanager
async def _live(rt: Runtime, batch_id: str) -> AsyncIterator[asyncio.Queue | None]:
    if rt.settings.embedded:
        yield None
        return
    # the event backend's hub: one pub/sub connection for run and batch subscribers alike
    async with rt.events.hub.listen(BATCH_EVENTS_CHANNEL.format(batch_id=batch_id),
                                    decode=json.loads) as queue:
        yield queue


async def _read(rt: Runtime, batch_id: str, after: int) -> list[dict[str, Any]]:
    return await asyncio.to_thread(rt.store.batch_frames, batch_id, after,
                                   BATCH_PAGE_RUNS)


async def _catch_up(rt: Runtime, batch_id: str, last: int) -> AsyncIterator[dict[str, Any]]:
    """Every stored frame after `last`, a page at a time."""
    while True:
        frames = await _read(rt, batch_id, last)
        for frame in frames:
            yield frame
            last = frame["seq"]
        if len(frames) < BATCH_PAGE_RUNS:
            return


def _ended_before(rt: Runtime, batch_id: str, after: int) -> bool:
    """The batch is done and its `done` frame is at or before `after`: nothing will come."""
    batch = rt.store.batch(batch_id) or {}
    return batch.get("finished_at") is not None and after >= int(batch.get("log_seq") or 0)


async def subscribe(rt: Runtime, batch_id: str, after: int = 0) -> AsyncIterator[dict[str, Any]]:
    """Frames `{"seq", "event", "data"}` with seq > after: replayed, then live, each once, in
    order, ending after `done`."""
    last = after
    async with _live(rt, batch_id) as queue:
        item: Any = RESYNC
        while True:
            if item is RESYNC or item["seq"] > last + 1:
                frames: Any = _catch_up(rt, batch_id, last)  # replay, or fill a gap from the log
            else:
                frames = _single(item if item["seq"] == last + 1 else None)
            before = last
            async for frame in frames:
                yield frame
                last = frame["seq"]
                if frame["event"] == "done":
                    return
            if last == before and item is RESYNC and await asyncio.to_thread(
                    _ended_before, rt, batch_id, last):
                return
            if queue is None:  # embedded: look again in a moment
                await asyncio.sleep(MEMORY_POLL_S)
                item = RESYNC
                continue
            try:
                item = await asyncio.wait_for(queue.get(), SUBSCRIBE_RESYNC_S)
            except TimeoutError:
                item = RESYNC


async def _single(frame: dict[str, Any] | None) -> AsyncIterator[dict[str, Any]]:
    if frame is not None:
        yield frame
