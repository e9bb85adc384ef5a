"""What Celery monitors (Flower) see of a run: its task mirrors how the run ended.

Flower builds a task's state from the worker's events: `task-succeeded` is SUCCESS,
`task-failed` FAILURE (showing the exception's repr and traceback), `task-revoked` REVOKED.
So a failed run's task raises `RunFailed("<code>: <message>")` from the task function itself
(a fresh exception, outside any `except`: its traceback holds Celery's frames and that one
line, never the agent's or runcast's own), and a cancelled run's task sends `task-revoked` and
raises Celery's `Ignore` (acknowledged, no other event). Redelivered messages of runs that ended
mirror the same ending; those of runs still going raise `Ignore` and change nothing.

The arguments a task shows (`argsrepr`, `kwargsrepr`) are the run id and a preview of its input:
at most TASK_INPUT_PREVIEW_CHARS characters, values of fields named like secrets masked.
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any

from celery.exceptions import Ignore

from streaming.constants import TASK_INPUT_PREVIEW_CHARS
from streaming.events import dumps
from tasks.store import TERMINAL

log = logging.getLogger(__name__)

# Input fields whose values a task never shows (matched anywhere in the field's name).
SECRET_FIELD = re.compile(
    r"pass(word|wd|phrase)?|secret|token|api[_-]?key|auth|credential|cookie|session|"
    r"private[_-]?key|signature",
    re.IGNORECASE,
)
MASK = "***"
ELLIPSIS = "…"


class RunFailed(Exception):
    """The run this task executed failed: `<code>: <message>` (Flower shows it as the task's
    exception)."""


def _mask(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: MASK if SECRET_FIELD.search(str(k)) else _mask(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_mask(v) for v in value]
    return value


def input_preview(input_json: str | None, limit: int = TASK_INPUT_PREVIEW_CHARS) -> str:
    """The run's input (JSON text) as a task shows it: secrets masked, at most `limit`
    characters as shown (repr escapes count)."""
    if input_json is None:  # not given to enqueue: nothing to show, rather than a wrong {}
        return ""
    text = input_json
    if SECRET_FIELD.search(text):  # only then is the input decoded
        try:
            text = dumps(_mask(json.loads(text)))
        except ValueError:
            text = ""
    if _shown(text) <= limit:
        return text
    cut = limit - 1
    while cut > 0 and _shown(text[:cut] + ELLIPSIS) > limit:  # escapes take room
        cut -= 1
    return text[:cut] + ELLIPSIS


def _shown(text: str) -> int:
    return len(repr(text)) - 2


def task_reprs(run_id: str, attempt: int, input_json: str | None) -> dict[str, str]:
    """`argsrepr` and `kwargsrepr` for apply_async/send_task."""
    return {"argsrepr": repr((run_id, input_preview(input_json))),
            "kwargsrepr": repr({"attempt": attempt})}


def failure(error: dict[str, Any] | None) -> RunFailed:
    error = error or {}
    return RunFailed(f"{error.get('code') or 'error'}: {error.get('error') or 'the run failed'}")


def _send(task: Any, event_type: str, **fields: Any) -> None:
    try:
        task.send_event(event_type, **fields)
    except Exception:
        log.warning("could not send %s for run %s", event_type, task.request.id, exc_info=True)


def announce(task: Any, status: str, error: dict[str, Any] | None) -> None:
    """Send the event of how the run ended now (before its process is stopped hard)."""
    if status == "cancelled":
        _send(task, "task-revoked", terminated=False, signum=None, expired=False)
    elif status == "failed":
        _send(task, "task-failed", exception=repr(failure(error)), traceback="")


def ending(task: Any, result: dict[str, Any], rt: Any) -> RunFailed | Ignore | None:
    """What the task raises for the execution's `result` (None: it returns the result);
    `rt` (the Runtime) reads the error of a run that ended elsewhere."""
    status = result.get("status")
    if "skipped" in result and status not in TERMINAL:
        return Ignore()  # a duplicate of a run still going, or of none
    if status == "succeeded":
        return None
    if status == "cancelled":
        announce(task, "cancelled", None)
        return Ignore()
    if status == "failed":
        error = result.get("error")
        if error is None:  # ended elsewhere (the reaper), or by an earlier delivery
            error = (rt.store.get(result["run_id"]) or {}).get("error")
        return failure(error)
    return Ignore()
