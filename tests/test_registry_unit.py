"""Which handler parameter gets the StreamContext (the contract: one named `context`, or one
annotated `StreamContext`), whatever way the annotation is written. No `from __future__ import
annotations` here: the annotations below are objects, as in a user's module without it."""

from typing import Optional, Union

import pytest

import streaming
from streaming import StreamContext
from tasks import service
from tasks.registry import agent, context_parameter
from tasks.runtime import Runtime
from tasks.settings import Settings


def with_union(payload, ctx: StreamContext | None = None): ...
def with_optional(payload, ctx: Optional[StreamContext] = None): ...  # noqa: UP045
def with_typing_union(payload, ctx: Union[StreamContext, None] = None): ...  # noqa: UP007
def with_class(payload, ctx: StreamContext): ...
def with_string(payload, ctx: "streaming.StreamContext"): ...
def with_string_optional(payload, ctx: "Optional[StreamContext]" = None): ...  # noqa: UP045
def with_string_union(payload, ctx: "StreamContext | None" = None): ...
def named_context(payload, context=None): ...
def other_type(payload, ctx: int = 0): ...
def other_union(payload, ctx: StreamContext | int = 0): ...
def other_string_union(payload, ctx: "StreamContext | int" = 0): ...
def payload_only(payload): ...


@pytest.mark.parametrize("handler", [with_union, with_optional, with_typing_union, with_class,
                                     with_string, with_string_optional, with_string_union])
def test_an_annotated_parameter_gets_the_context(handler):
    assert context_parameter(handler) == "ctx"


def test_a_parameter_named_context_gets_it():
    assert context_parameter(named_context) == "context"


@pytest.mark.parametrize("handler", [other_type, other_union, other_string_union, payload_only])
def test_other_parameters_do_not(handler):
    assert context_parameter(handler) is None


@agent("t_registry_union_context")
def union_context_agent(payload, ctx: StreamContext | None = None) -> dict:
    ctx.sync_emit_progress(step="s", progress=0.5, message="half")
    return {"got": isinstance(ctx, StreamContext)}


def test_a_handler_annotated_streamcontext_or_none_gets_it_in_a_run():
    """The contract's own example, `context: StreamContext | None = None`, in a module without
    postponed annotations: the run's handler is called with its context."""
    rt = Runtime(Settings(redis_url="memory://", agents="tasks.demo"))
    rt.start_embedded_worker(concurrency=1)
    try:
        run_id = service.submit(rt, "t_registry_union_context", {})
        done = service.wait(rt, run_id, 30)
        assert done["status"] == "succeeded" and done["output"] == {"got": True}
        assert [e.type for e in rt.events.read(run_id)] == ["started", "progress", "complete"]
    finally:
        rt.close()
