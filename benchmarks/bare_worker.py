"""A plain Celery worker's app, for the I/O-bound benchmark's stock-worker side.

    REDIS_URL=redis://... celery -A benchmarks.bare_worker worker --pool threads -c 1000 -Q bench-stock

runcast's Celery settings (tasks.celery_config: JSON only, task events, the Redis result
backend) on kombu's own Redis transport, one task: `bench.sleep`, as benchmarks.bare defines it.
What a user of plain Celery runs: no runcast transport (it takes one message per BRPOP), nothing
of runcast's in the worker but its settings (importing them loads the `tasks` package, whose
worker signals act only for runcast's own app).
"""

from __future__ import annotations

import os
import time

from celery import Celery

from tasks.celery_config import configure_app
from tasks.settings import Settings

app = Celery("bare-stock")
configure_app(app, Settings(redis_url=os.environ["REDIS_URL"], agents=""))
app.conf.update(broker_transport=None, imports=[])


@app.task(name="bench.sleep", ignore_result=False)
def sleep_task(seconds: float = 2.0) -> dict:
    """benchmarks.bare.sleep_task, in a plain Celery app."""
    time.sleep(seconds)
    return {}
