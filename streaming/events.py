"""The event envelope and the typed events agents emit."""

from __future__ import annotations

import json
import re
from datetime import datetime, timezone
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


def utc_now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")


def dumps(value: Any) -> str:
    """Compact JSON; NaN and Infinity are refused (they are not JSON)."""
    return json.dumps(value, separators=(",", ":"), allow_nan=False, ensure_ascii=False)


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
    def build(cls, run_id: str, seq: int, event_type: str, data_json: str, data: dict) -> Event:
        """Make an envelope from already-serialised data (the emit hot path: no validation)."""
        ts = utc_now_iso()
        event = cls.model_construct(run_id=run_id, seq=seq, type=event_type, ts=ts, data=data)
        event._json = (
            f'{{"run_id":{json.dumps(run_id)},"seq":{seq},"type":"{event_type}",'
            f'"ts":"{ts}","data":{data_json}}}'
        )
        return event

    @classmethod
    def from_json(cls, raw: str | bytes) -> Event:
        fields = json.loads(raw)
        event = cls.model_construct(**fields)
        event._json = raw.decode() if isinstance(raw, bytes) else raw
        return event

    def to_json(self) -> str:
        if self._json is None:
            self._json = dumps(self.model_dump(mode="json"))
        return self._json

    @property
    def is_terminal(self) -> bool:
        return self.type in TERMINAL_TYPES


class _Payload(BaseModel):
    """A typed event: its fields are the envelope's `data`."""

    model_config = ConfigDict(extra="forbid")
    type: ClassVar[str]

    def event_type(self) -> str:
        return self.type

    def event_data(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


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
