"""Events and filters: the envelope, the typed events, custom names, presets, NaN."""

import json
import math
from datetime import datetime

import pytest

from streaming import (
    CancelledEvent,
    CheckpointEvent,
    CompleteEvent,
    CustomEvent,
    ErrorEvent,
    Event,
    EventsFilter,
    HeartbeatEvent,
    IntermittentUpdateEvent,
    ProgressEvent,
    StartedEvent,
    StepEvent,
    StreamContext,
    TextDeltaEvent,
    TokenEvent,
    UpdateEvent,
)

MANDATORY = ["started", "complete", "error", "cancelled"]
AGENT_TYPES = ["progress", "update", "token", "step", "checkpoint", "heartbeat"]


def queue_context(events="all", run_id="run-1") -> StreamContext:
    return StreamContext(run_id, events=events, queue_mode=True)


# -- the envelope ------------------------------------------------------------------------------
def test_envelope_has_the_contract_fields():
    ctx = queue_context(run_id="9f2c")
    event = ctx.sync_emit_progress(step="load", progress=0.5, message="Halfway")

    wire = json.loads(event.to_json())
    assert list(wire) == ["run_id", "seq", "type", "ts", "data"]
    assert wire["run_id"] == "9f2c"
    assert wire["seq"] == 1
    assert wire["type"] == "progress"
    assert wire["data"] == {"step": "load", "progress": 0.5, "message": "Halfway"}
    assert wire["ts"].endswith("Z")
    assert datetime.fromisoformat(wire["ts"]).microsecond >= 0
    assert len(wire["ts"]) == len("2026-11-21T21:00:00.123456Z")
    assert (event.run_id, event.seq, event.type, event.ts, event.data) == (
        wire["run_id"], wire["seq"], wire["type"], wire["ts"], wire["data"]
    )


def test_envelope_round_trips_through_json():
    event = queue_context().sync_emit("custom:found", items=[1, 2], name="ünïcode ✓")
    again = Event.from_json(event.to_json())
    assert again == event
    assert again.to_json() == event.to_json()
    assert Event.model_validate_json(event.to_json()) == event


def test_envelope_json_escapes_the_run_id():
    event = StreamContext('run "7" é\\', queue_mode=True).sync_emit_heartbeat()
    assert json.loads(event.to_json())["run_id"] == 'run "7" é\\'


def test_envelope_built_by_pydantic_serialises_the_same_way():
    event = Event(run_id="r", seq=7, type="token", ts="2026-01-01T00:00:00.000001Z",
                  data={"content": "hi", "finish_reason": None})
    assert json.loads(event.to_json()) == event.model_dump()
    assert Event.from_json(event.to_json()) == event


def test_timestamps_do_not_go_backwards():
    ctx = queue_context()
    stamps = [ctx.sync_emit_heartbeat().ts for _ in range(200)]
    assert stamps == sorted(stamps)


def test_seq_counts_from_one_per_run():
    ctx = queue_context()
    assert [ctx.sync_emit_heartbeat().seq for _ in range(5)] == [1, 2, 3, 4, 5]
    other = queue_context(run_id="run-2")
    assert other.sync_emit_heartbeat().seq == 1


def test_terminal_types_are_terminal():
    ctx = queue_context()
    assert not ctx.sync_emit_token("x").is_terminal
    assert ctx.sync_emit_complete(output=1).is_terminal
    assert queue_context().sync_emit_error("boom").is_terminal
    assert queue_context().sync_emit_cancelled().is_terminal


# -- typed classes -----------------------------------------------------------------------------
TYPED = [
    (StartedEvent(agent="a", attempt=2, worker="w"), "started",
     {"agent": "a", "attempt": 2, "worker": "w"}),
    (ProgressEvent(step="s", progress=0.25, message="m"), "progress",
     {"step": "s", "progress": 0.25, "message": "m"}),
    (UpdateEvent(text="t", content={"k": 1}), "update", {"text": "t", "content": {"k": 1}}),
    (TokenEvent(content="Hello "), "token", {"content": "Hello ", "finish_reason": None}),
    (TokenEvent(content="!", finish_reason="stop"), "token",
     {"content": "!", "finish_reason": "stop"}),
    (StepEvent(node_name="n", duration_ms=1.5, input_keys=["a"], output_keys=["b"]), "step",
     {"node_name": "n", "duration_ms": 1.5, "input_keys": ["a"], "output_keys": ["b"]}),
    (CheckpointEvent(name="c", data={"x": [1]}), "checkpoint", {"name": "c", "data": {"x": [1]}}),
    (HeartbeatEvent(), "heartbeat", {}),
    (CustomEvent(name="analysis_started", data={"doc": 3}), "custom:analysis_started",
     {"doc": 3}),
    (CompleteEvent(output={"a": 1}, latency_seconds=0.5), "complete",
     {"output": {"a": 1}, "latency_seconds": 0.5, "metadata": {}}),
    (ErrorEvent(error="boom", code="agent_error", details={"type": "ValueError"}), "error",
     {"error": "boom", "code": "agent_error", "details": {"type": "ValueError"}}),
    (CancelledEvent(reason="user"), "cancelled", {"reason": "user"}),
    (IntermittentUpdateEvent(text="Searching...", content={"q": "x"}), "update",
     {"text": "Searching...", "content": {"q": "x"}}),
    (TextDeltaEvent(text="Hel"), "token", {"content": "Hel", "finish_reason": None}),
]


@pytest.mark.parametrize(("obj", "event_type", "data"), TYPED, ids=[t[1] for t in TYPED])
def test_typed_event_becomes_its_type_and_data(obj, event_type, data):
    event = queue_context().sync_emit(obj)
    assert event.type == event_type
    assert event.data == data
    assert json.loads(event.to_json())["data"] == data


@pytest.mark.parametrize(("obj", "event_type", "data"), TYPED, ids=[t[1] for t in TYPED])
async def test_async_emit_takes_event_objects(obj, event_type, data):
    event = await queue_context().emit(obj)
    assert (event.type, event.data) == (event_type, data)


def test_emit_by_type_name_validates_like_the_class():
    ctx = queue_context()
    event = ctx.sync_emit("progress", progress=0.5)
    assert event.data == {"step": None, "progress": 0.5, "message": None}
    with pytest.raises(ValueError):
        ctx.sync_emit("progress", progress=1.5)
    with pytest.raises(ValueError):
        ctx.sync_emit("token", text="not a field of token")
    assert ctx.sync_emit_heartbeat().seq == 2  # the refused emits took no seq


def test_emit_object_refuses_extra_keyword_data():
    with pytest.raises(TypeError):
        queue_context().sync_emit(HeartbeatEvent(), extra=1)


# -- custom names ------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["a", "analysis_complete", "x.y-z_09", "A" * 64])
def test_valid_custom_names(name):
    event = queue_context().sync_emit(f"custom:{name}", value=1)
    assert event.type == f"custom:{name}"
    assert event.data == {"value": 1}


@pytest.mark.parametrize(
    "event_type",
    ["custom:", "custom:" + "A" * 65, "custom:a b", "custom:a/b", "custom:é", "custom:a:b",
     "custom", "bogus", "tokens", "Token", "", "custom:a\n"],
)
def test_invalid_or_unknown_types_raise_value_error(event_type):
    ctx = queue_context()
    with pytest.raises(ValueError):
        ctx.sync_emit(event_type, value=1)
    assert ctx.drain_queued_events() == []


@pytest.mark.parametrize("name", ["", "bad name", "x" * 65, "ok:no"])
def test_custom_event_object_with_bad_name_raises(name):
    with pytest.raises(ValueError):
        queue_context().sync_emit(CustomEvent(name=name, data={}))


async def test_async_emit_validates_names_too():
    with pytest.raises(ValueError):
        await queue_context().emit("custom:not ok")


# -- NaN and other non-JSON data ---------------------------------------------------------------
@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_nan_and_infinity_are_refused(bad):
    ctx = queue_context()
    with pytest.raises(ValueError):
        ctx.sync_emit("custom:x", value=bad)
    with pytest.raises(ValueError):
        ctx.sync_checkpoint("c", {"nested": [bad]})
    with pytest.raises(ValueError):
        ctx.sync_emit(CheckpointEvent(name="c", data={"x": bad}))
    with pytest.raises(ValueError):
        ctx.sync_emit(UpdateEvent(text="t", content={"x": bad}))
    with pytest.raises(ValueError):
        ctx.sync_emit_progress(progress=bad)
    with pytest.raises(ValueError):
        ctx.sync_emit_complete(output={"score": bad})
    assert ctx.sync_emit_heartbeat().seq == 1  # nothing refused took a seq


def test_non_json_data_is_refused():
    ctx = queue_context()
    with pytest.raises(TypeError):
        ctx.sync_emit("custom:x", value=object())
    with pytest.raises(TypeError):
        ctx.sync_emit_update("t", content={"when": datetime(2026, 1, 1)})
    with pytest.raises(ValueError):
        ctx.sync_emit_token("\ud800")  # a lone surrogate cannot be UTF-8
    assert ctx.sync_emit_heartbeat().seq == 1


# -- filters -----------------------------------------------------------------------------------
def test_minimal_allows_only_mandatory():
    f = EventsFilter("minimal")
    assert all(f.allows(t) for t in MANDATORY)
    assert not any(f.allows(t) for t in AGENT_TYPES)
    assert not f.allows("custom:x")


def test_chat_preset():
    f = EventsFilter("chat")
    for allowed in ["token", "step", "progress", "update", "heartbeat", *MANDATORY]:
        assert f.allows(allowed), allowed
    assert not f.allows("checkpoint")
    assert not f.allows("custom:x")


@pytest.mark.parametrize("preset", ["debug", "all"])
def test_debug_and_all_allow_everything(preset):
    f = EventsFilter(preset)
    assert all(f.allows(t) for t in MANDATORY + AGENT_TYPES)
    assert f.allows("custom:anything.at-all_1")


def test_default_filter_is_all():
    assert EventsFilter().allows("custom:x")
    assert EventsFilter(None).allows("checkpoint")
    assert queue_context(events=None).sync_emit("custom:x") is not None


def test_list_with_custom_allows_every_custom_event():
    f = EventsFilter(["token", "custom"])
    assert f.allows("token")
    assert f.allows("custom:a") and f.allows("custom:b")
    assert not f.allows("progress")


def test_list_with_custom_name_allows_only_that_one():
    f = EventsFilter("token, custom:a")
    assert f.allows("custom:a")
    assert not f.allows("custom:b")
    assert not f.allows("update")


def test_comma_string_and_list_are_the_same_filter():
    assert EventsFilter("progress,custom:x") == EventsFilter(["progress", "custom:x"])
    assert EventsFilter(EventsFilter("chat")) == EventsFilter("chat")


def test_presets_combine_with_names():
    f = EventsFilter("minimal,checkpoint")
    assert f.allows("checkpoint") and f.allows("complete")
    assert not f.allows("token")


@pytest.mark.parametrize("spec", ["minimal", "chat", "token", "custom", ["custom:x"], "debug"])
def test_mandatory_events_always_pass(spec):
    f = EventsFilter(spec)
    assert all(f.allows(t) for t in MANDATORY)
    ctx = queue_context(events=spec)
    assert ctx.sync_emit_started(agent="a").seq == 1
    assert ctx.sync_emit_complete(output=None).seq == 2


@pytest.mark.parametrize(
    "spec", ["tokens", "custom:", "custom:bad name", "everything", "chat,nope", "", [""]]
)
def test_unknown_filter_name_raises_value_error(spec):
    with pytest.raises(ValueError):
        EventsFilter(spec)
    with pytest.raises(ValueError):
        StreamContext("r", events=spec, queue_mode=True)


def test_a_filtered_event_takes_no_seq():
    ctx = queue_context(events="chat")
    assert ctx.sync_emit_started(agent="a").seq == 1
    assert ctx.sync_checkpoint("dropped", {}) is None
    assert ctx.sync_emit("custom:dropped", x=1) is None
    assert ctx.sync_emit_token("kept").seq == 2
    assert ctx.sync_emit(CheckpointEvent(name="dropped")) is None
    assert ctx.sync_emit_complete(output="done").seq == 3
    assert [e.seq for e in ctx.drain_queued_events()] == [1, 2, 3]


def test_minimal_run_has_only_mandatory_events():
    ctx = queue_context(events="minimal")
    ctx.sync_emit_started()
    ctx.sync_emit_progress(progress=0.5)
    ctx.sync_emit_token("x")
    ctx.sync_emit_heartbeat()
    ctx.sync_emit_error("boom", code="agent_error")
    events = ctx.drain_queued_events()
    assert [(e.seq, e.type) for e in events] == [(1, "started"), (2, "error")]


@pytest.mark.parametrize("empty", [[], (), set()])
def test_an_empty_allow_list_is_minimal(empty):
    f = EventsFilter(empty)
    assert f == EventsFilter("minimal") and f.spec == "minimal"
    assert all(f.allows(t) for t in MANDATORY)
    assert not any(f.allows(t) for t in [*AGENT_TYPES, "custom:x"])
    ctx = queue_context(events=empty)
    ctx.sync_emit_started()
    ctx.sync_emit_token("x")
    ctx.sync_emit("custom:x")
    ctx.sync_emit_complete(output=None)
    assert [(e.seq, e.type) for e in ctx.drain_queued_events()] == [(1, "started"), (2, "complete")]
