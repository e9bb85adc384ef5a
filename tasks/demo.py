"""The demo agents (RUNCAST_AGENTS=tasks.demo)."""

from __future__ import annotations

import asyncio
import functools
import importlib.util
import itertools
import time
from typing import Any

from streaming import StreamContext
from tasks.registry import agent


def _number(payload: dict, name: str, default: float) -> float:
    value = payload.get(name, default) if isinstance(payload, dict) else default
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{name} must be a number")  # noqa: TRY004 - a bad input value
    return value


@agent("echo", description="Return the input unchanged")
def echo(payload: Any) -> dict:
    return {"echo": payload}


@agent("countdown", description="One progress event per step")
def countdown(payload: dict, context: StreamContext) -> dict:
    steps = int(_number(payload, "steps", 5))
    delay = _number(payload, "delay", 0.1)
    for i in range(1, steps + 1):
        time.sleep(delay)
        context.sync_emit_progress(step=f"{i}/{steps}", progress=i / steps,
                                   message=f"Step {i} of {steps}")
    return {"steps": steps}


def _words(payload: dict) -> list[str]:
    text = payload.get("text", "") if isinstance(payload, dict) else ""
    if not isinstance(text, str):
        raise ValueError("text must be a string")  # noqa: TRY004 - a bad input value
    return text.split()


@agent("tokens", description="One token event per word")
def tokens(payload: dict, context: StreamContext) -> dict:
    words = _words(payload)
    delay = _number(payload, "delay", 0)
    for i, word in enumerate(words):
        if delay:
            time.sleep(delay)
        context.sync_emit_token(word + " ", "stop" if i == len(words) - 1 else None)
    return {"text": payload.get("text", "")}


@agent("async_tokens", description="One token event per word, from an async handler")
async def async_tokens(payload: dict, context: StreamContext) -> dict:
    words = _words(payload)
    delay = _number(payload, "delay", 0)
    for i, word in enumerate(words):
        await asyncio.sleep(delay)
        await context.emit_token(word + " ", "stop" if i == len(words) - 1 else None)
    return {"text": payload.get("text", "")}


@agent("fail", description="Raise ValueError(message)")
def fail(payload: dict) -> dict:
    message = payload.get("message", "failed on purpose") if isinstance(payload, dict) else None
    raise ValueError(message or "failed on purpose")


@agent("sleep", description="Sleep cooperatively, a heartbeat each second")
def sleep(payload: dict, context: StreamContext) -> dict:
    seconds = _number(payload, "seconds", 1.0)
    end = time.monotonic() + seconds
    next_beat = time.monotonic() + 1.0
    while time.monotonic() < end:
        time.sleep(min(0.05, max(0.0, end - time.monotonic())))
        context.check_cancelled()
        if time.monotonic() >= next_beat:
            context.sync_emit_heartbeat()
            next_beat += 1.0
    return {"slept": seconds}


@agent("block", description="One time.sleep(seconds), no emits: only a hard stop ends it early")
def block(payload: dict) -> dict:
    seconds = _number(payload, "seconds", 1.0)
    time.sleep(seconds)
    return {"blocked": seconds}


@agent("custom", description="Emit custom analysis events")
def custom(payload: dict, context: StreamContext) -> dict:
    document_id = payload.get("document_id") if isinstance(payload, dict) else None
    context.sync_emit("custom:analysis_started", document_id=document_id)
    context.sync_emit("custom:analysis_complete", document_id=document_id, findings=3)
    return {"answer": "done"}


@agent("chatty", description="n token events as fast as it can")
def chatty(payload: dict, context: StreamContext) -> dict:
    n = int(_number(payload, "n", 100))
    for i in range(n):
        context.sync_emit_token(f"t{i} ")
    return {"n": n}


# -- `graph`: only with the extra runcast[langgraph] ------------------------------------------
GRAPH_REPLY = "A two-node LangGraph graph answered, and its chat model streamed this word by word."


def _has_langgraph() -> bool:
    return all(importlib.util.find_spec(name) is not None
               for name in ("langgraph", "langchain_core"))


@functools.cache
def word_by_word_chat_model() -> type:
    """langchain-core's fake chat model streaming its reply word by word ("word "), as `tokens`
    emits, with finish_reason "stop" on the last chunk, as OpenAI's models report it (the fake
    one streams words and spaces apart and reports none). Made on first use: LangGraph and
    langchain-core are the runcast[langgraph] extra."""
    from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
    from langchain_core.messages import AIMessageChunk
    from langchain_core.outputs import ChatGenerationChunk

    class WordByWordChatModel(GenericFakeChatModel):
        def _stream(self, messages, stop=None, run_manager=None, **kwargs):
            words = str(next(self.messages)).split(" ")
            for i, word in enumerate(words):
                last = i == len(words) - 1
                chunk = ChatGenerationChunk(message=AIMessageChunk(
                    content=word if last else word + " ",
                    response_metadata={"finish_reason": "stop"} if last else {}))
                if run_manager:
                    run_manager.on_llm_new_token(chunk.message.content, chunk=chunk)
                yield chunk

    return WordByWordChatModel


@functools.cache
def _demo_graph() -> Any:
    """prepare -> answer; the chat model is a fake one (a fixed reply, word by word)."""
    from typing import TypedDict

    from langgraph.graph import END, START, StateGraph

    class State(TypedDict, total=False):
        question: str
        prompt: str
        answer: str

    model = word_by_word_chat_model()(messages=itertools.repeat(GRAPH_REPLY))

    def prepare(state: State) -> dict:
        return {"prompt": f"Answer in one sentence: {state.get('question', '')}"}

    async def answer(state: State) -> dict:
        message = await model.ainvoke(state["prompt"])
        return {"answer": message.content}

    builder = StateGraph(State).add_node("prepare", prepare).add_node("answer", answer)
    return builder.add_edge(START, "prepare").add_edge("prepare", "answer").add_edge(
        "answer", END).compile()


if _has_langgraph():

    @agent("graph", description="A two-node LangGraph graph whose fake chat model streams tokens")
    async def graph(payload: dict, context: StreamContext) -> dict:
        from streaming.integrations.langgraph import stream_graph

        question = payload.get("question", "") if isinstance(payload, dict) else ""
        if not isinstance(question, str):
            raise ValueError("question must be a string")  # noqa: TRY004 - a bad input value
        state = await stream_graph(_demo_graph(), {"question": question}, context)
        return {"answer": state["answer"]}
