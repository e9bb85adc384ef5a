"""An agent only the web UI tests use (RUNCAST_AGENTS="tasks.demo,tests.agents_ui").

It is on the `ui` queue, which only the UI tests' worker consumes. It emits what no demo agent
does: `update` lines between tokens, and a custom event type the page cannot know in advance.
"""

from __future__ import annotations

import time

from streaming import StreamContext
from tasks.registry import agent

STORY_CUSTOM = "custom:ui_found_thing"


@agent("ui_story", description="update, custom and token events, with pauses", queue="ui")
def ui_story(payload: dict, context: StreamContext) -> dict:
    pause = float(payload.get("pause", 0.5))
    context.sync_emit_update("Searching the archive", {"query": "runcast"})
    time.sleep(pause)
    context.sync_emit(STORY_CUSTOM, item="doc-7", score=0.9)
    time.sleep(pause)
    context.sync_emit_token("Found ")
    context.sync_emit_token("it. ")
    time.sleep(pause)
    context.sync_emit_update("Writing the answer")
    time.sleep(pause)
    context.sync_emit_token("Done.", "stop")
    return {"answer": "Found it. Done."}
