"""The event envelope and the typed events agents emit."""

from __future__ import annotations

import json
import re
import time
from json.encoder import encode_basestring
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr

MANDATORY_TYPES = frozenset({"started", "complete", "error", "cancelled"})
TERMINAL_TYPES = frozenset({"complete", "error", "cancelled"})
AGENT_TYPES = frozenset({"progress", "update", "token", "step", "checkpoint", "heartbeat"})
KNOWN_TYPES = MANDATORY_TYPES | AGENT_TYPES
CUSTOM_PREFIX = "custom:"
CUSTOM_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")


def check_event_type(event_type: str) -> str:
    """Return `event_type` if runcast knows it, else raise ValueError."""
    if event_type in KNOWN_TYPES:
        return event_type
    if isinstance(event_type, str) and event_type.startswith(CUSTOM_PREFIX):
        if CUSTOM_NAME.fullmatch(event_type[len(CUSTOM_PREFIX) :]):
            return event_type
        raise ValueError(
            f"invalid custom event name {event_type!r}: "
            "the part after 'custom:' must match [A-Za-z0-9_.-]{1,64}"
        )
    raise ValueError(
        f"unknown event type {event_type!r}: use one of {sorted(KNOWN_TYPES)} or 'custom:NAME'"
    )


def _refuse(value: Any) -> Any:
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


# One reusable C encoder: json.dumps with non-default options builds a new encoder per call,
# which is most of an emit's cost. NaN and Infinity are refused (they are not JSON).
try:
    from _json import make_encoder as _make_encoder

    _c_encode = _make_encoder(None, _refuse, encode_basestring, None, ":", ",", False, False, False)

    def dumps(value: Any) -> str:
        """Compact JSON; NaN and Infinity are refused (they are not JSON)."""
        if type(value) is str:
            return encode_basestring(value)
        return "".join(_c_encode(value, 0))

except ImportError:  # pragma: no cover - CPython always has _json
    _py_encoder = json.JSONEncoder(separators=(",", ":"), allow_nan=False, ensure_ascii=False)
    dumps = _py_encoder.encode

def nesting_depth(value: Any, limit: int) -> int:
    """How deeply lists and dicts nest in `value` (a scalar is 0), counting no further than
    `limit + 1`: a caller refuses values deeper than `limit` before a recursive encoder (Python's
    json, pydantic's serializer) fails on them. Iterative, so any depth is safe to measure."""
    deepest = 0
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children = item.values()
        elif isinstance(item, list | tuple):
            children = item
        else:
            continue
        deepest = max(deepest, depth)
        if depth > limit:
            return deepest
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list | tuple))
    return deepest


_ts_cache: tuple[int, str] = (0, "1970-01-01T00:00:00")


def utc_now_iso() -> str:
    """`2026-11-21T21:00:00.123456Z`; the part up to the second is formatted once a second."""
    global _ts_cache
    now = time.time()
    second = int(now)
    cached = _ts_cache
    if cached[0] != second:
        cached = _ts_cache = (second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)))
    return f"{cached[1]}.{int((now - second) * 1_000_000):06d}Z"


def envelope_head(run_id: str) -> str:
    """The start of every envelope of a run, up to its seq."""
    return '{"run_id":' + encode_basestring(run_id) + ',"seq":'


class Event(BaseModel):
    """The envelope every event travels in."""

    model_config = ConfigDict(frozen=True)

    run_id: str
    seq: int
    type: str
    ts: str
    data: dict[str, Any] = Field(default_factory=dict)

    _json: str | None = PrivateAttr(default=None)

    @classmethod
    def _trusted(
        cls, run_id: str, seq: int, event_type: str, ts: str, data: dict, raw: str | None
    ) -> Event:
        """An envelope from known-good values, without validation (model_construct is slow)."""
        event = cls.__new__(cls)
        setattr_ = object.__setattr__
        setattr_(
            event,
            "__dict__",
            {"run_id": run_id, "seq": seq, "type": event_type, "ts": ts, "data": data},
        )
        setattr_(event, "__pydantic_fields_set__", set(_FIELDS))
        setattr_(event, "__pydantic_extra__", None)
        setattr_(event, "__pydantic_private__", {"_json": raw})
        return event

    @classmethod
    def build(
        cls,
        run_id: str,
        seq: int,
        event_type: str,
        data_json: str,
        data: dict,
        head: str | None = None,
    ) -> Event:
        """Make an envelope from already-serialised data (the emit hot path: no validation).

        `head` is `envelope_head(run_id)`, which a caller emitting many events computes once.
        """
        ts = utc_now_iso()
        raw = (
            f'{head or envelope_head(run_id)}{seq},"type":"{event_type}",'
            f'"ts":"{ts}","data":{data_json}}}'
        )
        return cls._trusted(run_id, seq, event_type, ts, data, raw)

    @classmethod
    def from_json(cls, raw: str | bytes) -> Event:
        raw = raw.decode() if isinstance(raw, bytes) else raw
        return cls.from_fields(json.loads(raw), raw)

    @classmethod
    def from_fields(cls, fields: dict[str, Any], raw: str | None = None) -> Event:
        """An envelope from a decoded JSON object that runcast wrote."""
        data = fields.get("data", {})
        return cls._trusted(fields["run_id"], fields["seq"], fields["type"], fields["ts"], data, raw)

    def to_json(self) -> str:
        private = self.__pydantic_private__
        raw = private.get("_json")
        if raw is None:
            raw = private["_json"] = dumps(self.model_dump(mode="json"))
        return raw

    @property
    def is_terminal(self) -> bool:
        return self.type in TERMINAL_TYPES

    def __eq__(self, other: object) -> bool:
        # Fields only: the cached JSON text is not part of an event's identity.
        if not isinstance(other, Event):
            return NotImplemented
        return self.__dict__ == other.__dict__

    def __hash__(self) -> int:
        return hash((self.run_id, self.seq, self.type, self.ts))


_FIELDS = frozenset(Event.model_fields)


class _Payload(BaseModel):
    """A typed event: its fields are the envelope's `data`."""

    model_config = ConfigDict(extra="forbid")
    type: ClassVar[str]

    def event_type(self) -> str:
        return self.type

    def event_data(self) -> dict[str, Any]:
        # Python mode, not "json": pydantic's JSON mode would turn NaN into null silently, and
        # the emit path refuses what is not JSON.
        return self.model_dump()


class StartedEvent(_Payload):
    type: ClassVar[str] = "started"
    agent: str | None = None
    attempt: int = 1
    worker: str | None = None


class ProgressEvent(_Payload):
    type: ClassVar[str] = "progress"
    step: str | None = None
    progress: float = Field(ge=0.0, le=1.0)
    message: str | None = None


class UpdateEvent(_Payload):
    type: ClassVar[str] = "update"
    text: str
    content: dict[str, Any] | None = None

    def event_data(self) -> dict[str, Any]:
        data = self.model_dump()
        if data["content"] is None:
            data["content"] = {}  # an object, never null
        return data


class TokenEvent(_Payload):
    type: ClassVar[str] = "token"
    content: str
    finish_reason: str | None = None


class StepEvent(_Payload):
    type: ClassVar[str] = "step"
    node_name: str
    duration_ms: float | None = None
    input_keys: list[str] = Field(default_factory=list)
    output_keys: list[str] = Field(default_factory=list)


class CheckpointEvent(_Payload):
    type: ClassVar[str] = "checkpoint"
    name: str
    data: Any = None


class HeartbeatEvent(_Payload):
    type: ClassVar[str] = "heartbeat"


class CompleteEvent(_Payload):
    type: ClassVar[str] = "complete"
    output: Any = None
    latency_seconds: float | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)


class ErrorEvent(_Payload):
    type: ClassVar[str] = "error"
    error: str
    code: str | None = None
    details: dict[str, Any] = Field(default_factory=dict)


class CancelledEvent(_Payload):
    type: ClassVar[str] = "cancelled"
    reason: str | None = None


class CustomEvent(_Payload):
    """`custom:NAME` with any JSON object as data."""

    type: ClassVar[str] = "custom"
    name: str
    data: dict[str, Any] = Field(default_factory=dict)

    def event_type(self) -> str:
        return check_event_type(CUSTOM_PREFIX + self.name)

    def event_data(self) -> dict[str, Any]:
        return self.data


class IntermittentUpdateEvent(_Payload):
    """Accepted by `emit`; becomes an `update` event."""

    type: ClassVar[str] = "update"
    text: str
    content: dict[str, Any] | None = None

    event_data = UpdateEvent.event_data


class TextDeltaEvent(_Payload):
    """Accepted by `emit`; becomes a `token` event."""

    type: ClassVar[str] = "token"
    text: str

    def event_data(self) -> dict[str, Any]:
        return {"content": self.text, "finish_reason": None}


PAYLOAD_CLASSES: dict[str, type[_Payload]] = {
    cls.type: cls
    for cls in (
        StartedEvent,
        ProgressEvent,
        UpdateEvent,
        TokenEvent,
        StepEvent,
        CheckpointEvent,
        HeartbeatEvent,
        CompleteEvent,
        ErrorEvent,
        CancelledEvent,
    )
}


def envelope_parts(run_id: str, event_type: str, data: dict[str, Any]) -> tuple[str, str]:
    """An envelope split around its `seq`, for stores that number an event as they write it."""
    prefix = f'{{"run_id":{json.dumps(run_id)},"seq":'
    suffix = f',"type":"{event_type}","ts":"{utc_now_iso()}","data":{dumps(data)}}}'
    return prefix, suffix
