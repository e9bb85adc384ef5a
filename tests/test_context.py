"""StreamContext: emit methods, queue mode, the current context, cancellation, seq under threads."""

import asyncio
import contextvars
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from streaming import (
    EventsFilter,
    MemoryEventBackend,
    RunCancelled,
    StreamContext,
    TokenEvent,
    capture_events,
    emit,
    emit_update,
    get_current_context,
    reset_current_context,
    set_current_context,
)

# (async method, sync twin or None, args, kwargs, type, data)
METHODS = [
    ("emit_progress", "sync_emit_progress", ("load", 0.1, "Loading"), {}, "progress",
     {"step": "load", "progress": 0.1, "message": "Loading"}),
    ("emit_update", "sync_emit_update", ("Searching...",), {"content": {"q": 1}}, "update",
     {"text": "Searching...", "content": {"q": 1}}),
    ("emit_update", "sync_emit_update", ("plain",), {}, "update",
     {"text": "plain", "content": {}}),
    ("checkpoint", "sync_checkpoint", ("state", {"n": 2}), {}, "checkpoint",
     {"name": "state", "data": {"n": 2}}),
    ("emit_token", "sync_emit_token", ("Hello ",), {}, "token",
     {"content": "Hello ", "finish_reason": None}),
    ("emit_token", "sync_emit_token", ("end",), {"finish_reason": "stop"}, "token",
     {"content": "end", "finish_reason": "stop"}),
    ("emit_token", "sync_emit_token", ('quote " and \\ and \n and é',), {}, "token",
     {"content": 'quote " and \\ and \n and é', "finish_reason": None}),
    ("emit_step", "sync_emit_step", ("node", 12.5, ["a"], ["b", "c"]), {}, "step",
     {"node_name": "node", "duration_ms": 12.5, "input_keys": ["a"], "output_keys": ["b", "c"]}),
    ("emit_heartbeat", "sync_emit_heartbeat", (), {}, "heartbeat", {}),
    ("emit", "sync_emit", ("custom:found",), {"n": 3}, "custom:found", {"n": 3}),
    ("emit", "sync_emit", ("progress",), {"progress": 1.0}, "progress",
     {"step": None, "progress": 1.0, "message": None}),
    ("emit", "sync_emit", (TokenEvent(content="t"),), {}, "token",
     {"content": "t", "finish_reason": None}),
    ("emit_started", "sync_emit_started", ("agent-x",), {"worker": "w1"}, "started",
     {"agent": "agent-x", "attempt": 1, "worker": "w1"}),
    ("emit_complete", "sync_emit_complete", ({"answer": 42}, 1.25), {}, "complete",
     {"output": {"answer": 42}, "latency_seconds": 1.25, "metadata": {}}),
    ("emit_error", "sync_emit_error", ("boom",), {"code": "agent_error",
     "details": {"type": "ValueError"}}, "error",
     {"error": "boom", "code": "agent_error", "details": {"type": "ValueError"}}),
    ("emit_cancelled", "sync_emit_cancelled", (), {"reason": "user"}, "cancelled",
     {"reason": "user"}),
]
IDS = [f"{m[0]}-{i}" for i, m in enumerate(METHODS)]


@pytest.mark.parametrize(("method", "twin", "args", "kwargs", "event_type", "data"), METHODS,
                         ids=IDS)
async def test_async_methods_and_sync_twins_emit_the_same(
    method, twin, args, kwargs, event_type, data
):
    # a context each: a terminal event ends its run, and nothing may follow it
    ctx, twin_ctx = StreamContext("run", queue_mode=True), StreamContext("run", queue_mode=True)
    first = await getattr(ctx, method)(*args, **kwargs)
    second = getattr(twin_ctx, twin)(*args, **kwargs)
    assert ctx.drain_queued_events() == [first] and twin_ctx.drain_queued_events() == [second]
    for event in (first, second):
        assert (event.run_id, event.seq, event.type, event.data) == ("run", 1, event_type, data)


def test_sync_twins_from_plain_threads_while_a_loop_runs_elsewhere():
    ctx = StreamContext("run", queue_mode=True)
    loop = asyncio.new_event_loop()
    loop_thread = threading.Thread(target=loop.run_forever)
    loop_thread.start()
    try:
        asyncio.run_coroutine_threadsafe(asyncio.sleep(0), loop).result(5)  # the loop runs
        ctx.sync_emit_progress(step="a", progress=0.5)
        with ThreadPoolExecutor(2) as pool:
            pool.submit(ctx.sync_emit_token, "x").result(5)
            pool.submit(ctx.sync_emit_heartbeat).result(5)
        asyncio.run_coroutine_threadsafe(ctx.emit_update("from the loop"), loop).result(5)
    finally:
        loop.call_soon_threadsafe(loop.stop)
        loop_thread.join(5)
        loop.close()
    events = ctx.drain_queued_events()
    assert [e.type for e in events] == ["progress", "token", "heartbeat", "update"]
    assert [e.seq for e in events] == [1, 2, 3, 4]


async def test_sync_twins_inside_a_running_loop():
    ctx = StreamContext("run", queue_mode=True)
    ctx.sync_emit_token("a")  # no await, no loop made
    await asyncio.to_thread(ctx.sync_emit_token, "b")
    assert [e.data["content"] for e in ctx.drain_queued_events()] == ["a", "b"]


def test_properties():
    backend = MemoryEventBackend()
    ctx = StreamContext("r-1", backend=backend, events="chat", attempt=2)
    assert ctx.run_id == "r-1"
    assert ctx.attempt == 2
    assert ctx.queue_mode is False
    assert ctx.events_filter == EventsFilter("chat")
    assert ctx.cancelled is False
    assert ctx.sync_emit_started().data["attempt"] == 2


def test_a_context_needs_a_backend_unless_queued():
    with pytest.raises(ValueError):
        StreamContext("r", queue_mode=False)
    assert StreamContext("r").queue_mode is True


# -- queue mode --------------------------------------------------------------------------------
def test_queue_mode_keeps_events_until_drained():
    backend = MemoryEventBackend()
    ctx = StreamContext("r", backend=backend, queue_mode=True)
    ctx.sync_emit_token("a")
    ctx.sync_emit_token("b")
    assert backend.read("r") == []
    drained = ctx.drain_queued_events()
    assert [(e.seq, e.data["content"]) for e in drained] == [(1, "a"), (2, "b")]
    assert ctx.drain_queued_events() == []
    assert ctx.sync_emit_token("c").seq == 3
    assert [e.seq for e in ctx.drain_queued_events()] == [3]
    ctx.flush()  # nothing to flush in queue mode; must not raise


async def test_queue_mode_aflush_is_a_no_op():
    ctx = StreamContext("r", queue_mode=True)
    await ctx.emit_token("a")
    await ctx.aflush()
    assert len(ctx.drain_queued_events()) == 1


# -- the current context -----------------------------------------------------------------------
def test_get_set_and_reset_current_context():
    assert get_current_context() is None
    outer = StreamContext("outer", queue_mode=True)
    inner = StreamContext("inner", queue_mode=True)
    outer_token = set_current_context(outer)
    assert get_current_context() is outer
    inner_token = set_current_context(inner)
    assert get_current_context() is inner
    reset_current_context(inner_token)
    assert get_current_context() is outer
    reset_current_context(outer_token)
    assert get_current_context() is None


def test_module_emit_is_a_no_op_outside_a_run():
    assert get_current_context() is None
    assert emit("custom:x", a=1) is None
    assert emit_update("nobody listens", content={"a": 1}) is None
    assert emit(TokenEvent(content="t")) is None


def _helper_deep_down(n: int):
    emit_update(f"step {n}", content={"n": n})
    emit("custom:helper", n=n)


def _helper(n: int):
    _helper_deep_down(n)


def test_module_emit_works_from_nested_helpers():
    ctx = StreamContext("r", queue_mode=True)
    token = set_current_context(ctx)
    try:
        _helper(1)
        event = emit("progress", progress=0.5)
    finally:
        reset_current_context(token)
    assert event.seq == 3
    events = ctx.drain_queued_events()
    assert [(e.type, e.data) for e in events] == [
        ("update", {"text": "step 1", "content": {"n": 1}}),
        ("custom:helper", {"n": 1}),
        ("progress", {"step": None, "progress": 0.5, "message": None}),
    ]
    _helper(2)  # after the reset: a no-op again
    assert ctx.drain_queued_events() == []


def test_module_emit_validates_inside_a_run():
    ctx = StreamContext("r", queue_mode=True)
    token = set_current_context(ctx)
    try:
        with pytest.raises(ValueError):
            emit("custom:bad name")
        with pytest.raises(ValueError):
            emit("nonsense")
    finally:
        reset_current_context(token)


async def test_module_emit_works_in_async_code_and_tasks():
    ctx = StreamContext("r", queue_mode=True)
    token = set_current_context(ctx)
    try:

        async def worker(i: int):
            await asyncio.sleep(0)
            emit_update(f"task {i}")

        await asyncio.gather(*(worker(i) for i in range(5)))
        await asyncio.to_thread(emit_update, "to_thread")
    finally:
        reset_current_context(token)
    texts = sorted(e.data["text"] for e in ctx.drain_queued_events())
    assert texts == sorted([f"task {i}" for i in range(5)] + ["to_thread"])


def test_module_emit_works_in_threads_started_with_copied_context():
    ctx = StreamContext("r", queue_mode=True)
    token = set_current_context(ctx)
    try:
        threads = [
            threading.Thread(target=contextvars.copy_context().run, args=(_helper, i))
            for i in range(4)
        ]
        bare = threading.Thread(target=_helper, args=(99,))  # without the caller's context
    finally:
        reset_current_context(token)
    for thread in [*threads, bare]:
        thread.start()
    for thread in [*threads, bare]:
        thread.join(5)
    events = ctx.drain_queued_events()
    assert sorted(e.data["n"] for e in events if e.type == "custom:helper") == [0, 1, 2, 3]
    assert sorted(e.seq for e in events) == list(range(1, 9))


# -- capture_events ----------------------------------------------------------------------------
def test_capture_events_collects_what_agent_code_emits():
    with capture_events(run_id="cap") as events:
        ctx = get_current_context()
        assert ctx is not None and ctx.run_id == "cap"
        emit_update("hello", content={"a": 1})
        ctx.sync_emit_token("t")
        _helper(7)
    assert get_current_context() is None
    assert [e.type for e in events] == ["update", "token", "update", "custom:helper"]
    assert [e.seq for e in events] == [1, 2, 3, 4]
    assert emit_update("after") is None


def test_capture_events_applies_its_filter_and_restores_the_outer_context():
    outer = StreamContext("outer", queue_mode=True)
    token = set_current_context(outer)
    try:
        with capture_events(events="minimal") as events:
            emit_update("dropped")
            get_current_context().sync_emit_complete(output=1)
        assert get_current_context() is outer
    finally:
        reset_current_context(token)
    assert [e.type for e in events] == ["complete"]
    assert outer.drain_queued_events() == []


# -- cancellation ------------------------------------------------------------------------------
def test_check_cancelled_raises_once_requested():
    ctx = StreamContext("r", queue_mode=True)
    ctx.check_cancelled()
    called = []
    ctx.on_cancel(lambda: called.append(1))
    ctx.request_cancel("user asked")
    assert ctx.cancelled is True
    assert called == [1]
    with pytest.raises(RunCancelled) as info:
        ctx.check_cancelled()
    assert info.value.reason == "user asked"
    late = []
    ctx.on_cancel(lambda: late.append(1))  # registered after the request: called at once
    assert late == [1]


def test_run_cancelled_is_not_caught_by_except_exception():
    ctx = StreamContext("r", queue_mode=True)
    ctx.request_cancel()
    swallowed = []

    def agent_code():
        try:
            ctx.check_cancelled()
        except Exception as exc:  # noqa: BLE001 - what careless agent code does
            swallowed.append(exc)

    with pytest.raises(RunCancelled):
        agent_code()
    assert swallowed == []
    assert not issubclass(RunCancelled, Exception)


def test_emits_raise_after_cancel_but_the_runtime_can_still_end_the_run():
    ctx = StreamContext("r", queue_mode=True)
    ctx.sync_emit_token("a")
    ctx.request_cancel("stop")
    with pytest.raises(RunCancelled):
        ctx.sync_emit_token("b")
    with pytest.raises(RunCancelled):
        emit_in(ctx, "custom:x")
    assert ctx.sync_emit_cancelled(reason="stop").seq == 2
    assert [e.type for e in ctx.drain_queued_events()] == ["token", "cancelled"]


async def test_async_emits_raise_after_cancel():
    ctx = StreamContext("r", queue_mode=True)
    ctx.request_cancel()
    with pytest.raises(RunCancelled):
        await ctx.emit_progress(progress=0.5)


def emit_in(ctx: StreamContext, event_type: str):
    token = set_current_context(ctx)
    try:
        return emit(event_type)
    finally:
        reset_current_context(token)


# -- seq across contexts and threads -----------------------------------------------------------
# (`backend`: conftest's, each event backend in turn)
def test_a_new_context_of_the_same_run_continues_the_seq(backend, run_id):
    first = StreamContext(run_id, backend=backend)
    first.sync_emit_started(attempt=1)
    first.sync_emit_token("a")
    first.sync_emit_token("b")  # not flushed: a retry in this process must still continue
    retry = StreamContext(run_id, backend=backend, attempt=2)
    assert retry.sync_emit_started().seq == 4
    retry.sync_emit_complete(output="ok")
    retry.flush()
    events = backend.read(run_id)
    assert [e.seq for e in events] == [1, 2, 3, 4, 5]
    assert [e.data.get("attempt") for e in events if e.type == "started"] == [1, 2]


def test_a_new_context_after_a_flush_continues_the_seq(backend, run_id):
    first = StreamContext(run_id, backend=backend)
    for _ in range(3):
        first.sync_emit_heartbeat()
    first.flush()
    assert backend.last_seq(run_id) == 3
    assert StreamContext(run_id, backend=backend).sync_emit_heartbeat().seq == 4


def test_many_threads_emitting_into_one_run_get_contiguous_seqs(backend, run_id):
    ctx = StreamContext(run_id, backend=backend)
    threads, per_thread = 8, 300
    barrier = threading.Barrier(threads)

    def work(n: int):
        barrier.wait()
        for i in range(per_thread):
            ctx.sync_emit("custom:t", thread=n, i=i)

    pool = [threading.Thread(target=work, args=(n,)) for n in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join(30)
    ctx.sync_emit_complete(output=None)
    ctx.flush(timeout=30)
    events = backend.read(run_id)
    total = threads * per_thread + 1
    assert [e.seq for e in events] == list(range(1, total + 1))
    for n in range(threads):  # each thread's own events in the order it emitted them
        mine = [e.data["i"] for e in events if e.data.get("thread") == n]
        assert mine == list(range(per_thread))


async def test_an_update_without_content_has_an_empty_object_every_way_it_is_emitted():
    from streaming import IntermittentUpdateEvent, UpdateEvent, current_context

    ctx = StreamContext("r", queue_mode=True)
    ctx.sync_emit_update("a")
    await ctx.emit_update("b")
    ctx.sync_emit(UpdateEvent(text="c"))
    ctx.sync_emit(IntermittentUpdateEvent(text="d"))
    ctx.sync_emit("update", text="e")
    with current_context(ctx):
        emit_update("f")
        emit("update", text="g", content=None)
    assert [e.data for e in ctx.drain_queued_events()] == [
        {"text": t, "content": {}} for t in "abcdefg"]


@pytest.mark.parametrize("queue_mode", [False, True])
def test_nothing_follows_the_terminal_event_of_a_standalone_run(queue_mode):
    """DESIGN: exactly one terminal event per run, and it is last, also for a StreamContext used
    as a library (no runtime): after it, any emit, another terminal one included, raises."""
    backend = MemoryEventBackend()
    ctx = StreamContext("alone", backend=backend, queue_mode=queue_mode)
    ctx.sync_emit_token("a")
    ctx.sync_emit_complete(output={"ok": True})
    for late in (lambda: ctx.sync_emit_token("b"), lambda: ctx.sync_emit("custom:x"),
                 lambda: ctx.sync_emit_complete(output=None), lambda: ctx.sync_emit_error("x")):
        with pytest.raises(RuntimeError, match="has ended"):
            late()
    events = ctx.drain_queued_events() if queue_mode else backend.read("alone")
    assert [(e.seq, e.type) for e in events] == [(1, "token"), (2, "complete")]
