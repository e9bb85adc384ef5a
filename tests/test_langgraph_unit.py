"""stream_graph and LangGraphBackend in one process (queue mode and the memory backend): the
mapping rules of DESIGN.md "Framework-native streaming" on real compiled graphs with
langchain-core's fake chat models. The worker-and-SSE side is test_langgraph.py."""

from __future__ import annotations

import asyncio
import itertools
from typing import TypedDict

import pytest
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage
from langgraph.config import get_stream_writer
from langgraph.graph import END, START, MessagesState, StateGraph

from streaming import MemoryEventBackend, QueueBackend, StreamContext, emit, emit_update
from streaming.context import current_context
from streaming.integrations.langgraph import (
    STREAM_MODES,
    LangGraphBackend,
    stream_graph,
    sync_stream_graph,
)
from tests.agents_streaming import ReasonedFakeChatModel


class State(TypedDict, total=False):
    question: str
    answer: str


def two_nodes(reply: str = "one two three"):
    model = ReasonedFakeChatModel(messages=itertools.repeat(reply))

    def first(state: State) -> dict:
        emit_update("first")
        get_stream_writer()({"note": "from first"})
        return {"question": state["question"] + "?"}

    async def second(state: State) -> dict:
        emit("custom:before_model")
        message = await model.ainvoke(state["question"])
        emit("custom:after_model", n=len(message.content))
        return {"answer": message.content}

    return (StateGraph(State).add_node("first", first).add_node("second", second)
            .add_edge(START, "first").add_edge("first", "second").add_edge("second", END)
            .compile())


def summary(events) -> list[tuple[str, object]]:
    out = []
    for e in events:
        detail = e.data.get("content") if e.type == "token" else e.data.get("node_name")
        out.append((e.type, detail if detail is not None else e.data))
    return out


EXPECTED = [
    ("update", {"text": "first", "content": {}}),
    ("custom:langgraph", {"note": "from first"}),
    ("step", "first"),
    ("custom:before_model", {}),
    ("token", "one "), ("token", "two "), ("token", "three"),
    ("custom:after_model", {"n": 13}),
    ("step", "second"),
]


def test_the_stream_modes_are_the_contracts():
    assert STREAM_MODES == ["messages", "updates", "custom"]


@pytest.mark.parametrize("streaming_backend", [None, LangGraphBackend, QueueBackend])
async def test_events_in_the_log_with_any_streaming_backend(streaming_backend):
    backend = MemoryEventBackend()
    sb = streaming_backend() if streaming_backend else None
    ctx = StreamContext("r", backend=backend, streaming_backend=sb)
    state = await stream_graph(two_nodes(), {"question": "q"}, ctx)
    assert state == {"question": "q?", "answer": "one two three"}
    events = backend.read("r")
    assert [e.seq for e in events] == list(range(1, len(EXPECTED) + 1))
    got = summary(events)
    # user custom chunks go through LangGraph's queue: only their place before the step is fixed
    assert sorted(got[:2], key=str) == sorted(EXPECTED[:2], key=str)
    assert got[2:] == EXPECTED[2:]
    tokens = [e.data for e in events if e.type == "token"]
    assert [t["finish_reason"] for t in tokens] == [None, None, "stop"]


async def test_queue_mode_with_langgraph_backend_queues_each_event_once_in_seq_order():
    ctx = StreamContext("r", queue_mode=True, streaming_backend=LangGraphBackend())
    await stream_graph(two_nodes(), {"question": "q"}, ctx)
    queued = ctx.drain_queued_events()
    assert sorted(e.seq for e in queued) == list(range(1, len(EXPECTED) + 1))
    by_seq = sorted(queued, key=lambda e: e.seq)
    assert summary(by_seq)[2:] == EXPECTED[2:]
    node_events = [e for e in queued if e.type in ("update", "token") or
                   e.type.startswith("custom:") and e.type != "custom:langgraph"]
    assert [e.seq for e in node_events] == sorted(e.seq for e in node_events)


async def test_langgraph_backend_is_unavailable_outside_a_graph_run():
    backend = LangGraphBackend()
    assert backend.name == "langgraph"
    assert backend.is_available() is False
    ctx = StreamContext("r", queue_mode=True, streaming_backend=backend)
    event = ctx.sync_emit_update("outside")
    assert ctx.drain_queued_events() == [event]  # refused, so queued


async def test_envelopes_written_by_langgraph_backend_are_dicts_in_the_custom_stream():
    backend = MemoryEventBackend()
    ctx = StreamContext("r", backend=backend, streaming_backend=LangGraphBackend())
    with current_context(ctx):
        chunks = [c async for c in two_nodes().astream({"question": "q"}, stream_mode="custom")]
    logged = {e.seq: e for e in backend.read("r")}
    envelopes = [c for c in chunks if isinstance(c, dict) and "seq" in c]
    assert [c["type"] for c in envelopes] == ["update", "custom:before_model",
                                             "custom:after_model"]
    for envelope in envelopes:
        assert set(envelope) == {"run_id", "seq", "type", "ts", "data"}
        assert envelope == logged[envelope["seq"]].model_dump()


async def test_without_a_run_the_graph_runs_and_nothing_is_emitted():
    assert await stream_graph(two_nodes(), {"question": "q"}) == {
        "question": "q?", "answer": "one two three"}


async def test_the_current_context_is_used_and_a_given_one_becomes_current():
    current = StreamContext("current", queue_mode=True)
    given = StreamContext("given", queue_mode=True)
    with current_context(current):
        await stream_graph(two_nodes(), {"question": "q"}, given)
        assert current.drain_queued_events() == []
        assert len(given.drain_queued_events()) == len(EXPECTED)
        await stream_graph(two_nodes(), {"question": "q"})
        assert len(current.drain_queued_events()) == len(EXPECTED)


async def test_a_model_that_does_not_stream_gives_one_token_with_its_finish_reason():
    model = GenericFakeChatModel(disable_streaming=True, messages=itertools.repeat(
        AIMessage(content="whole answer", response_metadata={"finish_reason": "length"})))

    async def ask(state: MessagesState) -> dict:
        return {"messages": [await model.ainvoke(state["messages"])]}

    graph = StateGraph(MessagesState).add_node("ask", ask).add_edge(START, "ask").compile()
    ctx = StreamContext("r", queue_mode=True)
    await stream_graph(graph, {"messages": [("user", "hi")]}, ctx)
    events = ctx.drain_queued_events()
    assert [(e.type, e.data) for e in events] == [
        ("token", {"content": "whole answer", "finish_reason": "length"}),
        ("step", {"node_name": "ask", "duration_ms": events[1].data["duration_ms"],
                  "input_keys": ["messages"], "output_keys": ["messages"]})]


async def test_models_tagged_nostream_give_no_tokens():
    model = GenericFakeChatModel(messages=itertools.repeat("hidden words"))
    hidden = model.with_config(tags=["nostream"])

    async def ask(state: MessagesState) -> dict:
        return {"messages": [await hidden.ainvoke(state["messages"])]}

    graph = StateGraph(MessagesState).add_node("ask", ask).add_edge(START, "ask").compile()
    ctx = StreamContext("r", queue_mode=True)
    await stream_graph(graph, {"messages": [("user", "hi")]}, ctx)
    assert [e.type for e in ctx.drain_queued_events()] == ["step"]


async def test_the_callers_callbacks_still_run():
    seen = []

    class Recorder(BaseCallbackHandler):
        def on_llm_new_token(self, token, **kwargs):
            seen.append(token)

    ctx = StreamContext("r", queue_mode=True)
    await stream_graph(two_nodes(), {"question": "q"}, ctx, config={"callbacks": [Recorder()]})
    assert [token for token in seen if token] == ["one ", "two ", "three"]
    assert len(ctx.drain_queued_events()) == len(EXPECTED)


async def test_sync_stream_graph_works_while_a_loop_runs_in_the_thread():
    ctx = StreamContext("r", queue_mode=True)
    state = sync_stream_graph(two_nodes(), {"question": "q"}, ctx)  # a loop runs here
    assert state["answer"] == "one two three"
    assert len(ctx.drain_queued_events()) == len(EXPECTED)


def test_sync_stream_graph_from_plain_sync_code():
    ctx = StreamContext("r", queue_mode=True)
    with current_context(ctx):
        state = sync_stream_graph(two_nodes(), {"question": "q"})
    assert state["answer"] == "one two three"
    assert summary(ctx.drain_queued_events())[2:] == EXPECTED[2:]


async def test_a_cancelled_run_does_not_start_the_graph():
    from streaming import RunCancelled

    ctx = StreamContext("r", queue_mode=True)
    ctx.request_cancel("stop")
    with pytest.raises(RunCancelled):
        await stream_graph(two_nodes(), {"question": "q"}, ctx)
    assert ctx.drain_queued_events() == []


async def test_cancelling_the_context_cancels_a_running_graph():
    from streaming import RunCancelled

    started = asyncio.Event()

    async def forever(state: State) -> dict:
        started.set()
        await asyncio.sleep(3600)
        return {}

    graph = StateGraph(State).add_node("forever", forever).add_edge(START, "forever").compile()
    ctx = StreamContext("r", queue_mode=True)
    task = asyncio.ensure_future(stream_graph(graph, {"question": "q"}, ctx))
    await asyncio.wait_for(started.wait(), 10)
    ctx.request_cancel("user")
    with pytest.raises(RunCancelled):
        await asyncio.wait_for(task, 10)


async def test_a_custom_chunk_with_keys_that_are_not_text_becomes_an_event():
    """A node may write any dict to LangGraph's custom stream: keys that are not strings become
    text (as JSON stores them), not a failed run."""
    def node(state: State) -> dict:
        get_stream_writer()({1: "one", "event": "named like sync_emit's first parameter"})
        get_stream_writer()("plain text")
        return {"answer": "done"}

    graph = (StateGraph(State).add_node("node", node).add_edge(START, "node")
             .add_edge("node", END).compile())
    backend = MemoryEventBackend()
    ctx = StreamContext("r", backend=backend)
    assert await stream_graph(graph, {"question": "q"}, ctx) == {"question": "q",
                                                                  "answer": "done"}
    custom = [e.data for e in backend.read("r") if e.type == "custom:langgraph"]
    assert custom == [{"1": "one", "event": "named like sync_emit's first parameter"},
                      {"value": "plain text"}]


def graph_with_a_subgraph():
    def inner(state: State) -> dict:
        emit("custom:inner", depth=1)
        get_stream_writer()({"from": "the subgraph"})
        return {"answer": "inner"}

    sub = (StateGraph(State).add_node("inner", inner).add_edge(START, "inner")
           .add_edge("inner", END).compile())
    return (StateGraph(State).add_node("outer", sub).add_edge(START, "outer")
            .add_edge("outer", END).compile())


@pytest.mark.parametrize("queue_mode", [False, True])
async def test_events_of_a_subgraph_node_reach_the_log_and_the_queue_once(queue_mode):
    """An emit in a subgraph's node goes to LangGraph's custom stream (LangGraphBackend), which
    the parent's stream carries only when it asks for subgraphs: without that, in queue mode
    the event was in the log but never queued."""
    backend = MemoryEventBackend()
    ctx = StreamContext("r", backend=backend, queue_mode=queue_mode,
                        streaming_backend=LangGraphBackend())
    state = await stream_graph(graph_with_a_subgraph(), {"question": "q"}, ctx)
    assert state == {"question": "q", "answer": "inner"}
    expected = {("custom:inner", (("depth", 1),)),
                ("custom:langgraph", (("from", "the subgraph"),)),
                ("step", (("node_name", "outer"),))}

    def shape(events):
        out = set()
        for e in events:
            data = {"node_name": e.data["node_name"]} if e.type == "step" else e.data
            out.add((e.type, tuple(sorted(data.items()))))
        return out

    events = ctx.drain_queued_events() if queue_mode else backend.read("r")
    assert shape(events) == expected
    assert sorted(e.seq for e in events) == [1, 2, 3]  # each once: no duplicate, no gap
