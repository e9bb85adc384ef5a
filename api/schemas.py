"""Bodies of the HTTP API, with the contract's field names (DESIGN.md, "HTTP API").

Request models forbid unknown fields (a typo is a 422, not a silent default); response models
ignore fields they do not know, so an older client can read a newer server.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from api.constants import MAX_BATCH_RUNS
from streaming.constants import WEBHOOK_MAX_URL_CHARS
from streaming.events import Event

RunStatus = Literal["queued", "running", "succeeded", "failed", "cancelled"]
TERMINAL_STATUSES: frozenset[str] = frozenset({"succeeded", "failed", "cancelled"})

MAX_RUN_TIMEOUT_S = 7 * 86_400  # 1 week: the longest `timeout` a request may ask for
MAX_IDEMPOTENCY_KEY_CHARS = 200
MAX_CANCEL_REASON_CHARS = 1_000


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Response(BaseModel):
    model_config = ConfigDict(extra="ignore")


# Requests


class RunRequest(_Request):
    agent: str = Field(min_length=1)
    input: Any = Field(default_factory=dict)
    events: str | list[str] | None = None
    timeout: float | None = Field(default=None, gt=0, le=MAX_RUN_TIMEOUT_S)
    metadata: dict[str, Any] = Field(default_factory=dict)
    idempotency_key: str | None = Field(default=None, max_length=MAX_IDEMPOTENCY_KEY_CHARS)
    webhook: str | None = Field(default=None, max_length=WEBHOOK_MAX_URL_CHARS)


class CancelRequest(_Request):
    reason: str | None = Field(default=None, max_length=MAX_CANCEL_REASON_CHARS)


class BatchRequest(_Request):
    runs: list[RunRequest] = Field(min_length=1, max_length=MAX_BATCH_RUNS)
    metadata: dict[str, Any] = Field(default_factory=dict)
    webhook: str | None = Field(default=None, max_length=WEBHOOK_MAX_URL_CHARS)


# Responses


class RunError(_Response):
    error: str
    code: str | None = None
    details: dict[str, Any] | None = None


class RunProgress(_Response):
    step: str | None = None
    progress: float | None = None
    message: str | None = None


class WebhookStatus(_Response):
    state: Literal["pending", "delivered", "failed"]
    attempts: int = 0
    last_status: int | None = None
    last_error: str | None = None


class Run(_Response):
    run_id: str
    agent: str
    status: RunStatus
    created_at: str
    started_at: str | None = None
    finished_at: str | None = None
    attempt: int = 0
    input: Any = None
    output: Any = None
    error: RunError | None = None
    progress: RunProgress | None = None
    last_seq: int = 0
    cancel_requested: bool = False
    batch_id: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    stream_token: str | None = None
    webhook: str | None = None
    webhook_status: WebhookStatus | None = None

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES


class EventsPage(_Response):
    events: list[Event]
    next_after: int
    done: bool


class RunList(_Response):
    runs: list[Run]
    next_cursor: str | None = None


class BatchCreated(_Response):
    batch_id: str
    run_ids: list[str]
    total: int


class BatchStatus(_Response):
    batch_id: str
    total: int
    counts: dict[str, int]
    done: bool
    webhook: str | None = None
    webhook_status: WebhookStatus | None = None
    created_at: str | None = None
    finished_at: str | None = None


class BatchResult(_Response):
    index: int
    run_id: str
    status: str
    output: Any = None
    error: RunError | None = None


class BatchResults(_Response):
    results: list[BatchResult]
    next_after: int
    done: bool


class BatchFrame(_Response):
    """One frame of GET /batches/{id}/stream: `event` is `run` or `done`, `seq` its id."""

    seq: int
    event: str
    data: dict[str, Any]


class AgentInfo(_Response):
    name: str
    description: str | None = None
    events: str | list[str] | None = None
    timeout: float | None = None
    queue: str | None = None


class AgentList(_Response):
    agents: list[AgentInfo]


class Health(_Response):
    status: str
    redis: str
    workers: int = 0
