"""LangGraph runs as runcast runs (extra `runcast[langgraph]`).

`await stream_graph(graph, graph_input)` runs a compiled graph inside the current run with
`stream_mode=["messages", "updates", "custom"]` and maps what the graph streams to events:

- chat-model message chunks -> `token` (`finish_reason` on a message's last token when the model
  reports one). Tokens are emitted as the model produces them, in the node's own thread or task,
  so they keep their order with the node's own emits.
- each node's update -> `step` (`node_name`, `duration_ms` of the node, `input_keys`, and
  `output_keys`: the keys the node wrote), after the node's tokens and custom events.
- envelopes written by `LangGraphBackend` -> the events they already are (never twice).
- any other custom chunk -> `custom:langgraph`; an interrupt -> `custom:interrupt`.

It also asks for LangGraph's `values` stream, only to return the final state (at an interrupt:
the state so far).
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import threading
import time
from collections import defaultdict, deque
from collections.abc import Mapping
from contextlib import aclosing
from typing import Any
from uuid import UUID

try:
    from langchain_core.callbacks import BaseCallbackHandler
    from langchain_core.messages import AIMessage
    from langgraph.config import get_stream_writer
    from langgraph.constants import TAG_NOSTREAM
except ImportError as exc:  # pragma: no cover - exercised in a subprocess without the extra
    raise ImportError(
        "streaming.integrations.langgraph needs LangGraph and langchain-core: "
        "pip install 'runcast[langgraph]'"
    ) from exc

from streaming.context import StreamContext, current_context, get_current_context
from streaming.errors import RunCancelled
from streaming.events import Event, dumps

__all__ = ["STREAM_MODES", "LangGraphBackend", "stream_graph", "sync_stream_graph"]

STREAM_MODES = ["messages", "updates", "custom"]
INTERRUPT_KEY = "__interrupt__"
ENVELOPE_KEYS = frozenset({"run_id", "seq", "type", "ts", "data"})
FINISH_KEYS = ("finish_reason", "stop_reason", "done_reason")  # OpenAI, Anthropic, Ollama


def _stream_writer():
    """LangGraph's writer of the running node, None outside a graph run."""
    try:
        return get_stream_writer()
    except (RuntimeError, KeyError, TypeError, AttributeError):
        return None


class LangGraphBackend:
    """A streaming backend: inside a LangGraph node, an event's envelope (a dict) goes to the
    graph's `custom` stream; outside a graph run it is unavailable."""

    name = "langgraph"

    def is_available(self) -> bool:
        return _stream_writer() is not None

    def emit(self, event: Event) -> bool:
        writer = _stream_writer()
        if writer is None:
            return False
        writer({"run_id": event.run_id, "seq": event.seq, "type": event.type, "ts": event.ts,
                "data": event.data})
        return True


# -- what the graph streams, as events ----------------------------------------------------------
def _jsonable(value: Any) -> Any:
    """`value` if it is JSON, else a JSON copy (models dumped, anything else as text)."""
    try:
        dumps(value)
        return value
    except (TypeError, ValueError):
        return json.loads(json.dumps(value, default=_fallback))


def _fallback(value: Any) -> Any:
    dump = getattr(value, "model_dump", None)
    if callable(dump):
        try:
            return dump(mode="json")
        except Exception:  # noqa: BLE001, S110 - best effort; the text form follows
            pass
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    return str(value)


def _as_data(value: Any) -> dict[str, Any]:
    """A dict as event data (its keys as JSON has them: text); anything else as
    `{"value": ...}`."""
    value = _jsonable(value)
    if isinstance(value, dict):
        if all(isinstance(key, str) for key in value):
            return value
        return json.loads(dumps(value))  # {1: "x"} -> {"1": "x"}, as it would be stored
    return {"value": value}


def _text(message: Any) -> str:
    content = getattr(message, "content", message)
    if isinstance(content, str):
        return content
    parts = []
    for block in content or ():
        if isinstance(block, str):
            parts.append(block)
        elif isinstance(block, Mapping) and block.get("type") == "text":
            parts.append(str(block.get("text") or ""))
    return "".join(parts)


def _finish_reason(*sources: Any) -> str | None:
    for source in sources:
        if isinstance(source, Mapping):
            for key in FINISH_KEYS:
                reason = source.get(key)
                if isinstance(reason, str) and reason:
                    return reason
    return None


def _keys(value: Any) -> list[str]:
    if isinstance(value, Mapping):
        return [str(k) for k in value]
    if isinstance(value, list | tuple):
        keys: dict[str, None] = {}
        for item in value:
            if isinstance(item, Mapping):
                keys.update((str(k), None) for k in item)
        return list(keys)
    fields = getattr(type(value), "model_fields", None)
    if isinstance(fields, Mapping):
        return [str(k) for k in fields]
    return []


class _Observer(BaseCallbackHandler):
    """Callbacks of one graph run: times its nodes and emits chat-model tokens as they come."""

    run_inline = True  # called in the node's own task or thread, in order
    raise_error = True  # an emit that fails (a cancelled run) stops the model, as in the node

    def __init__(self, ctx: StreamContext | None) -> None:
        self.ctx = ctx
        self.root: UUID | None = None
        self.nodes: dict[UUID, tuple[str, float, list[str]]] = {}
        self.finished: dict[str, deque[tuple[float, list[str]]]] = defaultdict(deque)
        self.chat_runs: set[UUID] = set()
        self.streamed: set[UUID] = set()
        self.lock = threading.Lock()

    @property
    def ignore_llm(self) -> bool:
        return self.ctx is None

    ignore_retry = ignore_agent = ignore_retriever = ignore_custom_event = True

    # -- nodes ----------------------------------------------------------------------------------
    def on_chain_start(self, serialized, inputs, *, run_id, parent_run_id=None, tags=None,
                       metadata=None, **kwargs) -> None:
        with self.lock:
            if self.root is None:
                self.root = run_id  # the first chain is the graph itself
            elif parent_run_id == self.root:
                name = (metadata or {}).get("langgraph_node") or kwargs.get("name") or "?"
                self.nodes[run_id] = (str(name), time.perf_counter(), _keys(inputs))

    def on_chain_end(self, outputs, *, run_id, **kwargs) -> None:
        self._node_done(run_id)

    def on_chain_error(self, error, *, run_id, **kwargs) -> None:
        self._node_done(run_id)

    def _node_done(self, run_id: UUID) -> None:
        with self.lock:
            node = self.nodes.pop(run_id, None)
            if node is not None:
                name, began, input_keys = node
                duration_ms = round((time.perf_counter() - began) * 1000, 3)
                self.finished[name].append((duration_ms, input_keys))

    def node_timing(self, name: str) -> tuple[float | None, list[str]]:
        with self.lock:
            queue = self.finished.get(name)
            return queue.popleft() if queue else (None, [])

    # -- chat-model tokens ----------------------------------------------------------------------
    def on_chat_model_start(self, serialized, messages, *, run_id, tags=None,
                            **kwargs) -> None:
        if not tags or TAG_NOSTREAM not in tags:  # LangGraph's own opt-out of streaming
            self.chat_runs.add(run_id)

    def on_llm_start(self, serialized, prompts, *, run_id, **kwargs) -> None:
        return None  # a plain LLM (not a chat model): its text is no message

    def on_llm_new_token(self, token, *, chunk=None, run_id, **kwargs) -> None:
        if run_id not in self.chat_runs:
            return
        self.streamed.add(run_id)
        message = getattr(chunk, "message", None)
        text = _text(message) if message is not None else str(token or "")
        reason = _finish_reason(getattr(message, "response_metadata", None),
                                getattr(chunk, "generation_info", None))
        if text or reason:
            self.ctx.sync_emit_token(text, reason)

    def on_llm_end(self, response, *, run_id, **kwargs) -> None:
        if run_id not in self.chat_runs:
            return
        self.chat_runs.discard(run_id)
        if run_id in self.streamed:
            self.streamed.discard(run_id)
            return
        for generations in getattr(response, "generations", None) or ():
            for generation in generations:  # a model that did not stream: one token
                message = getattr(generation, "message", None)
                if not isinstance(message, AIMessage):
                    continue
                text = _text(message)
                reason = _finish_reason(message.response_metadata, generation.generation_info)
                if text or reason:
                    self.ctx.sync_emit_token(text, reason)

    def on_llm_error(self, error, *, run_id, **kwargs) -> None:
        self.chat_runs.discard(run_id)
        self.streamed.discard(run_id)


def _with_observer(config: Mapping[str, Any] | None, observer: _Observer) -> dict[str, Any]:
    config = dict(config or {})
    callbacks = config.get("callbacks")
    if callbacks is None:
        config["callbacks"] = [observer]
    elif isinstance(callbacks, list | tuple):
        config["callbacks"] = [*callbacks, observer]
    else:  # a callback manager
        manager = callbacks.copy()
        manager.add_handler(observer, inherit=True)
        config["callbacks"] = manager
    return config


class _Mapper:
    """Turns the chunks of `updates` and `custom` into events of the run."""

    def __init__(self, ctx: StreamContext, observer: _Observer) -> None:
        self.ctx = ctx
        self.observer = observer

    def updates(self, chunk: Any) -> None:
        if not isinstance(chunk, Mapping):
            return
        for name, update in chunk.items():
            if name == INTERRUPT_KEY:
                for interrupt in update if isinstance(update, list | tuple) else (update,):
                    value = getattr(interrupt, "value", interrupt)
                    self.ctx.sync_emit("custom:interrupt", **_as_data(value))
            elif not str(name).startswith("__"):
                duration_ms, input_keys = self.observer.node_timing(str(name))
                self.ctx.sync_emit_step(str(name), duration_ms, input_keys, _keys(update))

    def custom(self, chunk: Any) -> None:
        if (type(chunk) is dict and chunk.keys() == ENVELOPE_KEYS
                and chunk["run_id"] == self.ctx.run_id and isinstance(chunk["seq"], int)):
            # An event of this run that LangGraphBackend put in the stream: it has its seq and
            # is in the log already; in queue mode it is queued now, once.
            self.ctx._requeue(Event.from_fields(chunk))
            return
        self.ctx.sync_emit("custom:langgraph", **_as_data(chunk))


# -- running a graph ----------------------------------------------------------------------------
async def stream_graph(graph: Any, graph_input: Any, context: StreamContext | None = None, *,
                       config: Mapping[str, Any] | None = None) -> Any:
    """Run a compiled LangGraph graph inside the current (or given) run; return its final state
    (at an interrupt, the state so far). Cancelling the run cancels the graph; an exception in a
    node propagates."""
    ctx = context if context is not None else get_current_context()
    if ctx is not None:
        ctx.check_cancelled()
    observer = _Observer(ctx)
    mapper = _Mapper(ctx, observer) if ctx is not None else None
    run_config = _with_observer(config, observer)
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    active = True

    def cancel_graph() -> None:
        if active and task is not None:
            try:
                loop.call_soon_threadsafe(task.cancel)
            except RuntimeError:
                pass  # that loop has closed: the graph has ended

    if ctx is not None:
        ctx.on_cancel(cancel_graph)
    state: Any = None
    try:
        with current_context(ctx):
            stream = graph.astream(graph_input, run_config,
                                   stream_mode=[*STREAM_MODES, "values"], subgraphs=True)
            async with aclosing(stream):
                async for namespace, mode, chunk in stream:
                    if namespace:
                        # A subgraph's chunk: its nodes' custom chunks count (in queue mode,
                        # their events); steps and state are the parent graph's to report.
                        if mode == "custom" and mapper is not None:
                            mapper.custom(chunk)
                        continue
                    if mode == "values":
                        state = chunk
                    elif mapper is None:
                        continue
                    elif mode == "updates":
                        mapper.updates(chunk)
                    elif mode == "custom":
                        mapper.custom(chunk)
    except asyncio.CancelledError:
        if ctx is not None and ctx.cancelled:
            raise RunCancelled(ctx.cancel_reason) from None
        raise
    finally:
        active = False
    if isinstance(state, Mapping) and INTERRUPT_KEY in state:
        state = {k: v for k, v in state.items() if k != INTERRUPT_KEY}
    return state


def sync_stream_graph(graph: Any, graph_input: Any, context: StreamContext | None = None, *,
                      config: Mapping[str, Any] | None = None) -> Any:
    """`stream_graph` for sync handlers: runs the graph on an event loop of its own."""
    ctx = context if context is not None else get_current_context()

    def run() -> Any:
        return asyncio.run(stream_graph(graph, graph_input, ctx, config=config))

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return run()
    # Called from a thread whose loop is running: run the graph's loop in another thread.
    result: dict[str, Any] = {}
    caller = contextvars.copy_context()

    def target() -> None:
        try:
            result["value"] = caller.run(run)
        except BaseException as exc:  # noqa: BLE001 - raised again in the caller
            result["error"] = exc

    thread = threading.Thread(target=target, name="runcast-graph", daemon=True)
    thread.start()
    thread.join()
    if "error" in result:
        raise result["error"]
    return result.get("value")
