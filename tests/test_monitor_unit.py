"""What a run's Celery task shows Flower as its arguments (tasks.monitor): the run id and a
preview of the input, at most 200 characters as shown, secrets masked."""

from __future__ import annotations

import ast
import json

import pytest

from tasks.monitor import input_preview, task_reprs


@pytest.mark.parametrize("text", [
    "x" * 1000,
    "'\\\"" * 300,  # quotes and backslashes grow in a repr
    "\x00\x01\x7f" * 200,  # so do control characters
    "é漢字🙂" * 200,
])
def test_preview_is_at_most_200_characters_as_shown(text):
    preview = input_preview(json.dumps({"text": text}))
    assert len(repr(preview)) - 2 <= 200
    assert preview.endswith("…")
    assert preview.startswith('{"text"')


def test_a_short_input_is_shown_whole():
    assert input_preview('{"n":1}') == '{"n":1}'
    assert input_preview(None) == ""


def test_fields_named_like_secrets_are_masked_at_any_depth():
    payload = {"prompt": "hi", "api_key": "sk-1", "nested": [{"Password": "p", "ok": 2}],
               "headers": {"Authorization": "Bearer t"}, "session_id": "s", "client_secret": "c"}
    assert json.loads(input_preview(json.dumps(payload))) == {
        "prompt": "hi", "api_key": "***", "nested": [{"Password": "***", "ok": 2}],
        "headers": {"Authorization": "***"}, "session_id": "***", "client_secret": "***"}


def test_task_reprs_show_the_run_id_and_the_preview():
    shown = task_reprs("abc123", 2, json.dumps({"token": "t0p", "q": "x" * 500}))
    run_id, preview = ast.literal_eval(shown["argsrepr"])
    assert run_id == "abc123" and len(preview) <= 200 and "t0p" not in preview
    assert ast.literal_eval(shown["kwargsrepr"]) == {"attempt": 2}
