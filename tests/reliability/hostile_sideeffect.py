"""A module with a side effect on import: it creates the file named by RUNCAST_TEST_IMPORT_MARKER.

The hostile-input suite names it as an agent in requests and Celery messages; the marker file
must never appear (a name from a request must never import a module).
"""

import os
from pathlib import Path

_marker = os.environ.get("RUNCAST_TEST_IMPORT_MARKER")
if _marker:
    Path(_marker).write_text(f"imported by pid {os.getpid()}\n")


def run(payload=None):  # what an attacker would like to call
    return {"pwned": True}
