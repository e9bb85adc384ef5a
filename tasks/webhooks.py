"""Webhook messages: what is sent when a run (or a batch) ends, how it is signed, when it is
tried again.

A message is made once, at its first attempt, and kept: every retry sends the same body under
the same `webhook-id`; only `webhook-timestamp` and the signature are new per attempt
(Standard Webhooks: https://www.standardwebhooks.com/). A queue member names what ended:
`run:<run_id>` or `batch:<batch_id>`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import uuid
from dataclasses import dataclass, replace
from typing import Any

from streaming.constants import WEBHOOK_BACKOFF_S
from streaming.events import dumps

PENDING = "pending"
DELIVERED = "delivered"
FAILED = "failed"
RUN_MEMBER = "run:"
BATCH_MEMBER = "batch:"


def pending_status() -> dict[str, Any]:
    """`webhook_status` of a run (or batch) whose webhook was not delivered yet."""
    return {"state": PENDING, "attempts": 0, "last_status": None, "last_error": None}


def run_member(run_id: str) -> str:
    return RUN_MEMBER + run_id


def batch_member(batch_id: str) -> str:
    return BATCH_MEMBER + batch_id


@dataclass(frozen=True)
class Message:
    """One webhook message and how its delivery stands (`status`: the `webhook_status`)."""

    id: str
    url: str
    body: str
    status: dict[str, Any]

    @property
    def attempts(self) -> int:
        return int(self.status.get("attempts") or 0)

    def with_status(self, status: dict[str, Any]) -> Message:
        return replace(self, status=status)


def new_message(url: str, event_type: str, timestamp: str, data: dict[str, Any]) -> Message:
    """`data` is the run or batch as its JSON (without stream_token)."""
    body = dumps({"type": event_type, "timestamp": timestamp, "data": data})
    return Message(id="msg_" + uuid.uuid4().hex, url=url, body=body, status=pending_status())


def run_event_type(status: str) -> str:
    """run.succeeded, run.failed or run.cancelled."""
    return f"run.{status}"


def signed_headers(key: bytes, message: Message, timestamp: int) -> dict[str, str]:
    """The Standard Webhooks headers of one attempt: v1 = HMAC-SHA256 of "{id}.{ts}.{body}"."""
    signed = f"{message.id}.{timestamp}.{message.body}".encode()
    signature = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    return {
        "content-type": "application/json",
        "webhook-id": message.id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": f"v1,{signature}",
    }


def retry_pause_s(attempts: int, scale: float = 1.0) -> float:
    """The pause after the `attempts`-th failed attempt: 5 s, 30 s, 2 min, 10 min, then hourly."""
    index = min(max(attempts, 1), len(WEBHOOK_BACKOFF_S)) - 1
    return WEBHOOK_BACKOFF_S[index] * scale


@dataclass(frozen=True)
class Attempt:
    """How one attempt went: the receiver's HTTP status, or an error (timeout, refused, ...)."""

    status_code: int | None = None
    error: str | None = None

    @property
    def delivered(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300

    @property
    def gone(self) -> bool:
        """410 Gone: the receiver wants no more messages; stop at once."""
        return self.status_code == 410


def after_attempt(message: Message, attempt: Attempt, max_attempts: int,
                  backoff_scale: float) -> tuple[dict[str, Any], float | None]:
    """The new `webhook_status`, and the pause before the next attempt (None: it is over)."""
    attempts = message.attempts + 1
    error = attempt.error
    if error is None and not attempt.delivered:
        error = f"the receiver answered HTTP {attempt.status_code}"
    if attempt.delivered:
        state, pause = DELIVERED, None
    elif attempt.gone or attempts >= max_attempts:
        state, pause = FAILED, None
    else:
        state, pause = PENDING, retry_pause_s(attempts, backoff_scale)
    status = {"state": state, "attempts": attempts, "last_status": attempt.status_code,
              "last_error": None if attempt.delivered else error}
    return status, pause
