"""Agents of the framework-native streaming tests (test_langgraph.py, test_checkpoint_resume.py):
LangGraph graphs with langchain-core's fake chat models (no network), and a checkpointing agent.

All are on the `graphs` queue, which only the workers those tests start consume (they load
RUNCAST_AGENTS="tasks.demo,tests.agents_streaming").
"""

from __future__ import annotations

import asyncio
import itertools
import time
from typing import Any, TypedDict

from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage
from langchain_core.tools import tool
from langgraph.config import get_stream_writer
from langgraph.graph import END, START, MessagesState, StateGraph
from langgraph.prebuilt import ToolNode, tools_condition
from langgraph.types import interrupt

from streaming import StreamContext, emit, emit_update
from streaming.integrations.langgraph import LangGraphBackend, stream_graph, sync_stream_graph
from tasks.demo import word_by_word_chat_model
from tasks.registry import agent

QUEUE = "graphs"
AGENTS = "tasks.demo,tests.agents_streaming"
TICKS = "runcast-test:ticks:{run_id}"  # counted by a node that runs until it is cancelled


# streams word by word ("word ") with finish_reason "stop" on its last chunk, as OpenAI's models do
ReasonedFakeChatModel = word_by_word_chat_model()


class State(TypedDict, total=False):
    question: str
    notes: list[str]
    answer: str


# -- node code that emits through LangGraphBackend ----------------------------------------------
def _emits_graph(reply: str):
    model = ReasonedFakeChatModel(messages=itertools.repeat(reply))

    def research(state: State) -> dict:
        emit_update("Researching", content={"question": state["question"]})
        emit("custom:found", sources=2)
        return {"notes": ["a", "b"]}

    async def write(state: State) -> dict:
        emit_update("Writing")
        message = await model.ainvoke(state["question"])
        emit("custom:written", words=len(message.content.split()))
        return {"answer": message.content}

    return (StateGraph(State).add_node("research", research).add_node("write", write)
            .add_edge(START, "research").add_edge("research", "write").add_edge("write", END)
            .compile())


@agent("t_lg_emits", description="Node code emits through LangGraphBackend", queue=QUEUE)
async def t_lg_emits(payload: dict, context: StreamContext) -> dict:
    graph = _emits_graph(payload.get("reply", "Two sources agree."))
    context.streaming_backend = LangGraphBackend()
    if payload.get("mode") == "stream_graph":
        state = await stream_graph(graph, {"question": payload["question"]})
        return {"answer": state["answer"]}
    # The graph's own custom stream, as any LangGraph consumer reads it.
    custom = [chunk async for chunk in graph.astream({"question": payload["question"]},
                                                     stream_mode="custom")]
    return {"custom": custom}


# -- a tool-calling step ------------------------------------------------------------------------
@tool
def weather(city: str) -> str:
    """The weather in a city."""
    emit_update("Looking up the weather", content={"city": city})
    return f"Sunny in {city}"


def _tools_graph(reply: str):
    calls = GenericFakeChatModel(disable_streaming=True, messages=itertools.repeat(AIMessage(
        content="", tool_calls=[{"name": "weather", "args": {"city": "Paris"}, "id": "call-1"}])))
    answers = ReasonedFakeChatModel(messages=itertools.repeat(reply))

    async def assistant(state: MessagesState) -> dict:
        used_tool = any(m.type == "tool" for m in state["messages"])
        model = answers if used_tool else calls
        return {"messages": [await model.ainvoke(state["messages"])]}

    return (StateGraph(MessagesState).add_node("assistant", assistant)
            .add_node("tools", ToolNode([weather]))
            .add_edge(START, "assistant").add_conditional_edges("assistant", tools_condition)
            .add_edge("tools", "assistant").compile())


@agent("t_lg_tools", description="A model calls a tool, then answers", queue=QUEUE)
async def t_lg_tools(payload: dict, context: StreamContext) -> dict:
    state = await stream_graph(_tools_graph(payload["reply"]),
                               {"messages": [("user", "Weather in Paris?")]}, context)
    return {"answer": state["messages"][-1].content,
            "kinds": [m.type for m in state["messages"]]}


# -- an interrupt -------------------------------------------------------------------------------
def _interrupt_graph(value: Any):
    def draft(state: State) -> dict:
        get_stream_writer()({"drafted": True})
        get_stream_writer()("plain text")
        return {"answer": "draft"}

    def review(state: State) -> dict:
        decision = interrupt(value)
        return {"answer": f"reviewed: {decision}"}

    return (StateGraph(State).add_node("draft", draft).add_node("review", review)
            .add_edge(START, "draft").add_edge("draft", "review").add_edge("review", END)
            .compile())


@agent("t_lg_interrupt", description="A graph that stops at an interrupt", queue=QUEUE)
def t_lg_interrupt(payload: dict, context: StreamContext) -> dict:
    state = sync_stream_graph(_interrupt_graph(payload["value"]), {"question": "q"})
    return {"state": state}


# -- a node that raises -------------------------------------------------------------------------
@agent("t_lg_fail", description="A node raises after streaming", queue=QUEUE)
async def t_lg_fail(payload: dict, context: StreamContext) -> dict:
    model = ReasonedFakeChatModel(messages=itertools.repeat("partial answer"))

    async def talk(state: State) -> dict:
        await model.ainvoke("q")
        raise LookupError("the node broke")

    graph = StateGraph(State).add_node("talk", talk).add_edge(START, "talk").compile()
    await stream_graph(graph, {"question": "q"}, context)
    return {"unreachable": True}


# -- a graph that runs until cancelled ----------------------------------------------------------
def _endless_graph(run_id: str):
    async def spin(state: State) -> dict:
        from tasks.celeryapp import runtime

        redis = runtime().redis
        emit("custom:spinning")
        while True:  # never returns: only cancelling the run stops it
            await asyncio.to_thread(redis.incr, TICKS.format(run_id=run_id))
            await asyncio.sleep(0.05)

    return StateGraph(State).add_node("spin", spin).add_edge(START, "spin").compile()


@agent("t_lg_endless", description="An async graph node that never ends", queue=QUEUE)
async def t_lg_endless(payload: dict, context: StreamContext) -> dict:
    await stream_graph(_endless_graph(context.run_id), {"question": "q"}, context)
    return {"unreachable": True}


@agent("t_lg_endless_sync", description="The same from a sync handler", queue=QUEUE)
def t_lg_endless_sync(payload: dict, context: StreamContext) -> dict:
    sync_stream_graph(_endless_graph(context.run_id), {"question": "q"}, context)
    return {"unreachable": True}


# -- resuming from the last checkpoint ----------------------------------------------------------
@agent("t_checkpointed", description="Counts steps, checkpointing each; resumes on a retry",
       queue=QUEUE)
def t_checkpointed(payload: dict, context: StreamContext) -> dict:
    steps = int(payload.get("steps", 10))
    resumed = context.last_checkpoint
    start = resumed["data"]["done"] if resumed else 0
    total = resumed["data"]["total"] if resumed else 0
    for i in range(start + 1, steps + 1):
        time.sleep(payload.get("delay", 0.3))
        total += i
        context.sync_checkpoint("counted", {"done": i, "total": total})
        context.flush()  # durable before the next step (the test kills the worker mid-run)
    return {"total": total, "attempt": context.attempt, "resumed_from": resumed}
