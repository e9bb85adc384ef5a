"""Two configurations in one process: a second Runtime beside the process's own (tasks.celeryapp),
each with its own Celery app, store and event log; no subprocess for the second: an embedded one
(memory) or one on Redis served by celery.contrib.pytest's in-process worker (conftest's
`celery_runtime`, `celery_served`)."""

import pytest

from tasks import service
from tasks.registry import agent
from tasks.runtime import Runtime
from tasks.settings import Settings
from tests.log_check import check_log

WAIT_S = 30


@pytest.fixture
def embedded_runtime():
    rt = Runtime(Settings(redis_url="memory://", agents="tasks.demo"))
    rt.start_embedded_worker(concurrency=2)
    yield rt
    rt.close()


def test_a_second_runtime_runs_its_runs_beside_the_first(runcast, worker, embedded_runtime):
    import tasks

    first = tasks.runtime()
    second = embedded_runtime
    assert second.app is not first.app and second.store is not first.store
    assert not first.settings.embedded and second.settings.embedded

    on_second = service.submit(second, "tokens", {"text": "two runtimes"})
    on_first = tasks.submit("echo", {"n": 1})
    done = service.wait(second, on_second, WAIT_S)
    assert done["status"] == "succeeded" and done["output"] == {"text": "two runtimes"}
    assert [e.type for e in second.events.read(on_second)] == [
        "started", "token", "token", "complete"]
    assert tasks.wait(on_first, WAIT_S)["status"] == "succeeded"
    # each run lives in its own configuration only
    assert service.get_run(first, on_second) is None
    assert service.get_run(second, on_first) is None


def test_a_second_runtime_on_redis_runs_beside_the_first(runcast, worker, celery_served,
                                                         celery_worker):
    """The second configuration on its own Redis database, its app celery.contrib.pytest's
    `celery_app` and its runs executed by `celery_worker` (a thread here), the first's by the
    session's worker process."""
    import tasks

    first, second = tasks.runtime(), celery_served
    assert second.app is not first.app and second.store is not first.store
    assert celery_worker.app is second.app
    assert not first.settings.embedded and not second.settings.embedded
    assert second.app.conf.accept_content == ["json"] and second.app.conf.task_serializer == "json"

    on_second = service.submit(second, "tokens", {"text": "two redis runtimes"})
    on_first = tasks.submit("echo", {"n": 2})
    done = service.wait(second, on_second, WAIT_S)
    assert done["status"] == "succeeded" and done["output"] == {"text": "two redis runtimes"}
    events = second.events.read(on_second)
    assert [e.type for e in events] == ["started", "token", "token", "token", "complete"]
    check_log(done, events)
    first_done = tasks.wait(on_first, WAIT_S)
    assert first_done["status"] == "succeeded"
    assert first.events.read(on_first)[0].data["worker"] != events[0].data["worker"]  # two workers
    # each run lives in its own configuration only
    assert service.get_run(first, on_second) is None
    assert service.get_run(second, on_first) is None


def test_a_second_runtime_cancels_its_own_runs(embedded_runtime):
    rt = embedded_runtime
    run_id = service.submit(rt, "sleep", {"seconds": 30})
    for _ in range(200):
        if service.get_run(rt, run_id)["status"] == "running":
            break
        service.wait(rt, run_id, 0.05)
    assert service.cancel(rt, run_id, "enough")["cancel_requested"] is True
    run = service.wait(rt, run_id, WAIT_S)
    assert run["status"] == "cancelled"
    assert rt.events.read(run_id)[-1].type == "cancelled"


@agent("on_another_queue", description="a test agent routed away from the default queue",
       queue="runtimes-elsewhere")
def on_another_queue(payload: dict) -> dict:
    return {"queue": "runtimes-elsewhere", "got": payload}


def test_the_embedded_worker_serves_every_agents_queue(embedded_runtime):
    """`runcast dev` is one process for everything: an agent routed to its own queue runs too."""
    rt = embedded_runtime
    run_id = service.submit(rt, "on_another_queue", {"n": 1})
    run = service.wait(rt, run_id, WAIT_S)
    assert run["status"] == "succeeded", run
    assert run["output"] == {"queue": "runtimes-elsewhere", "got": {"n": 1}}
