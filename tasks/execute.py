"""One execution of a run inside a worker: claim, run the handler under supervision, finish."""

from __future__ import annotations

import asyncio
import contextvars
import functools
import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from streaming.backends.redis import TRANSIENT_ERRORS
from streaming.constants import HEARTBEAT_STALE_S, MAX_OUTPUT_DEPTH, OUTAGE_LIMIT_S
from streaming.context import StreamContext, current_context
from streaming.errors import EventStoreUnavailable, RunCancelled
from streaming.events import dumps, envelope_parts, nesting_depth, utc_now_iso
from tasks import aio_pool, monitor, time_limits
from tasks.constants import HANDLER_THREADS_KEPT
from tasks.registry import AgentSpec
from tasks.supervision import Supervised, keep_time

if TYPE_CHECKING:
    from tasks.runtime import Runtime

log = logging.getLogger(__name__)

ENDED_REASON = "run ended"
CANCEL_SEEN_S = 0.1  # a handler thread's supervisor notices a cancel within this


def call_handler(spec: AgentSpec, payload: Any, ctx: StreamContext) -> Any:
    kwargs = {spec.context_param: ctx} if spec.context_param else {}
    if not spec.is_async:
        return spec.handler(payload, **kwargs)

    async def main() -> Any:
        task = asyncio.ensure_future(spec.handler(payload, **kwargs))
        loop = asyncio.get_running_loop()

        def cancel_task() -> None:
            try:
                loop.call_soon_threadsafe(task.cancel)
            except RuntimeError:
                pass  # the handler has already returned and its loop is closed

        ctx.on_cancel(cancel_task)
        try:
            return await task
        except asyncio.CancelledError:
            raise RunCancelled(ctx.cancel_reason) from None

    return asyncio.run(main())


def _run_handler(spec: AgentSpec, payload: Any, ctx: StreamContext, result: Supervised) -> None:
    try:
        with current_context(ctx):
            result.output = call_handler(spec, payload, ctx)
    except BaseException as exc:  # noqa: BLE001 - an agent's failure is a failed run
        result.error = exc
    finally:
        result.done.set()


class HandlerThreads:
    """The threads handlers run in, each kept for a later run once its handler has returned:
    starting a thread costs more than the whole run of a small agent. A handler left behind
    (it ignored its cancellation) keeps its thread; the next run gets another one."""

    def __init__(self, keep: int = HANDLER_THREADS_KEPT) -> None:
        self.keep = keep
        self._reset()
        os.register_at_fork(after_in_child=self._reset)  # the parent's threads are not there

    def _reset(self) -> None:
        self._idle: list[queue.SimpleQueue] = []
        self._lock = threading.Lock()

    def start(self, name: str, job: Callable[[], None]) -> None:
        with self._lock:
            jobs = self._idle.pop() if self._idle else None
        if jobs is None:
            jobs = queue.SimpleQueue()
            threading.Thread(target=self._serve, args=(jobs,), name=name, daemon=True).start()
        jobs.put((name, job))

    def _serve(self, jobs: queue.SimpleQueue) -> None:
        while True:
            name, job = jobs.get()
            threading.current_thread().name = name
            try:
                job()
            except BaseException:  # _run_handler keeps every error; this thread is not reused
                log.exception("a handler thread failed")
                return
            job = None  # an idle thread keeps nothing of its last run
            with self._lock:
                if len(self._idle) >= self.keep:
                    return
                self._idle.append(jobs)


handler_threads = HandlerThreads()


def supervise(spec: AgentSpec, payload: Any, ctx: StreamContext, *, timeout_s: float,
              grace_s: float) -> Supervised:
    """Run the handler in a thread; past its timeout or a cancel, give it `grace_s` to stop."""
    result = Supervised()
    if aio_pool.applies(spec):  # async handlers of a threads-pool worker share one loop
        return aio_pool.supervise_async(spec, payload, ctx, result, timeout_s=timeout_s,
                                        grace_s=grace_s)
    job = functools.partial(contextvars.copy_context().run, _run_handler, spec, payload, ctx,
                            result)
    handler_threads.start(f"runcast-run-{ctx.run_id[:8]}", job)
    return keep_time(ctx, result, timeout_s=timeout_s, grace_s=grace_s,
                     wait=lambda seconds: result.done.wait(min(seconds, CANCEL_SEEN_S)))


def _error(message: str, code: str, details: dict | None = None) -> dict[str, Any]:
    message = message.encode("utf-8", "backslashreplace").decode()  # no lone surrogate
    return {"error": message, "code": code, "details": details or {}}


def outcome(spec: AgentSpec, run_id: str, ctx: StreamContext, result: Supervised,
            latency_s: float, timeout_s: float) -> tuple[str, str, dict[str, Any]]:
    """(status, terminal event type, event data) for how the handler ended."""
    if result.soft_time_limit:  # Celery's soft time limit struck first (tasks/time_limits.py)
        return "failed", "error", time_limits.soft_limit_error()
    if result.timed_out:
        message = f"the run took longer than its timeout of {timeout_s:g} s"
        return "failed", "error", _error(message, "timeout", {"timeout": timeout_s})
    if ctx.cancelled:
        return "cancelled", "cancelled", {"reason": ctx.cancel_reason}
    if result.error is not None:
        exc = result.error
        if isinstance(exc, EventStoreUnavailable):
            return "failed", "error", _error(str(exc), "event_store_unavailable")
        log.error("agent %s failed in run %s", spec.name, run_id, exc_info=exc)
        message = str(exc) or type(exc).__name__
        return "failed", "error", _error(message, "agent_error", {"type": type(exc).__name__})
    try:
        if nesting_depth(result.output, MAX_OUTPUT_DEPTH) > MAX_OUTPUT_DEPTH:
            raise ValueError(f"it is nested deeper than {MAX_OUTPUT_DEPTH} levels")
        dumps(result.output).encode()
    except (TypeError, ValueError) as exc:  # UnicodeEncodeError: a lone surrogate
        message = f"the agent returned a value that is not JSON: {exc}"
        details = {"type": type(result.output).__name__}
        return "failed", "error", _error(message, "invalid_output", details)
    return "succeeded", "complete", {
        "output": result.output, "latency_seconds": latency_s, "metadata": {},
    }


def execute_run(rt: Runtime, spec: AgentSpec, task: Any, run_id: str,
                attempt: int) -> dict[str, Any]:
    """The body of every agent's Celery task."""
    side = rt.worker_side()
    hostname = getattr(task.request, "hostname", None) or "embedded"
    watch = side.cancels.watch(run_id)
    try:
        return _execute(spec, rt, side, watch, hostname, run_id, attempt, task)
    finally:
        side.cancels.unwatch(run_id)
        side.heartbeats.remove(run_id)


def _execute(spec, rt, side, watch, hostname, run_id, attempt, task=None) -> dict[str, Any]:
    settings = rt.settings
    started = envelope_parts(
        run_id, "started", {"agent": spec.name, "attempt": attempt, "worker": hostname}
    )
    claim = _through_outage(run_id, "not claimed yet", lambda: rt.store.claim(
        run_id, attempt, {"worker": hostname, "started_at": utc_now_iso()}, started,
        heartbeat_deadline=time.time() + HEARTBEAT_STALE_S,
    ))
    if not claim.ok:
        log.info("run %s attempt %s skipped: %s (%s)", run_id, attempt, claim.state, claim.status)
        return {"run_id": run_id, "skipped": claim.state, "status": claim.status}
    run = claim.run
    side.heartbeats.add(run_id)
    timeout_s = float(run.get("timeout") or settings.default_timeout)
    ctx = StreamContext(
        run_id, backend=rt.events, events=run.get("events") or settings.events,
        attempt=attempt, start_seq=claim.seq, allow_terminal=False,
    )
    watch.bind(ctx)
    if run.get("cancel_requested"):
        ctx.request_cancel(run.get("cancel_reason"))

    began = time.monotonic()
    result = supervise(spec, run.get("input"), ctx, timeout_s=timeout_s,
                       grace_s=settings.cancel_grace)
    latency_s = round(time.monotonic() - began, 6)
    status, event_type, data = outcome(spec, run_id, ctx, result, latency_s, timeout_s)
    try:
        ctx.flush()
    except EventStoreUnavailable as exc:
        status, event_type, data = "failed", "error", _error(str(exc), "event_store_unavailable")
        ctx.drop_unwritten(str(exc))  # the terminal event then follows what is in the store
    ctx.request_cancel(ENDED_REASON)  # a handler left behind can emit no more
    fields: dict[str, Any] = {"finished_at": utc_now_iso()}
    if status == "succeeded":
        fields["output"] = data["output"]
    elif status == "failed":
        fields["error"] = data
    done = _finish(rt, run_id, status, envelope_parts(run_id, event_type, data), fields, attempt,
                   cancel_wins=status != "cancelled")
    if done.state == "cancel_requested":
        # Cancelled (the API answered 202) while the handler was ending, before its notice came:
        # the cancel wins, as the contract promises, whatever the handler did.
        status, data = "cancelled", {"reason": done.run["cancel_reason"]}
        fields = {"finished_at": fields["finished_at"]}
        done = _finish(rt, run_id, status, envelope_parts(run_id, "cancelled", data), fields,
                       attempt)
    if not done.ok:
        log.warning("run %s attempt %s not finished: %s (%s)", run_id, attempt, done.state,
                    done.status)
    if result.abandoned:
        if done.ok:  # Flower hears how the run ended before the process is stopped
            monitor.announce(task, status, data if status == "failed" else None)
        side.hard_stop(run_id, result.done)
    if done.ok and status == "failed":
        return {"run_id": run_id, "status": status, "error": data}
    return {"run_id": run_id, "status": status if done.ok else done.status}


def _finish(rt, run_id: str, status: str, terminal: tuple[str, str], fields: dict[str, Any],
            attempt: int, cancel_wins: bool = False):
    """store.finish through an outage: a run whose handler has ended must not be left
    `running`, to be reaped and executed once more."""
    return _through_outage(run_id, "not finished yet", lambda: rt.store.finish(
        run_id, status, terminal, fields, attempt=attempt, cancel_wins=cancel_wins))


def _through_outage(run_id: str, what: str, call: Callable[[], Any]) -> Any:
    """`call()`, tried again while the run store is unreachable, up to OUTAGE_LIMIT_S.

    A killed connection or a short outage must not fail the task: a claim that failed would
    leave the run queued with its message consumed, a finish that failed would leave it running.
    When a first try did take effect but its answer was lost, the second finds the run claimed
    or ended (fenced): the claim is then skipped and the reaper runs the run again.
    """
    deadline = time.monotonic() + OUTAGE_LIMIT_S
    pause = 0.05
    while True:
        try:
            return call()
        except TRANSIENT_ERRORS as exc:
            if time.monotonic() > deadline:
                raise
            log.warning("run %s %s, the run store is unreachable (%s); retrying", run_id, what,
                        exc)
            time.sleep(pause)
            pause = min(pause * 2, 1.0)
