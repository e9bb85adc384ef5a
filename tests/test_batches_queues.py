"""A batch whose runs go to several queues: each queue's runs are dispatched by that queue's own
workers (a lane per queue), so a queue no worker consumes (`idle`, tests.agents_extra) holds back
only its own runs; and the reaper's resume of a stalled dispatch neither touches a cancelled or
wholly sent batch nor piles up dispatch messages behind one that still waits in the broker.

The HTTP test runs over the session's worker (queue `default`) and an API that knows the extra
agents. The others use a Redis database of their own (3) that no worker consumes: the broker
messages are read where they wait.
"""

from __future__ import annotations

import json
from urllib.parse import urlsplit, urlunsplit

import pytest

from streaming.constants import BATCH_DISPATCH_STALE_S, BATCH_KEY, DISPATCHING_KEY
from tests.runs_support import EXTRA_AGENTS
from tests.services import http_client, start_api


@pytest.fixture(scope="module")
def extra_api(redis_url, worker):
    """An API that knows the extra agents; the session's worker consumes `default` only."""
    import tests.agents_extra  # noqa: F401 - registered in this process too

    process, url = start_api(redis_url, RUNCAST_AGENTS=EXTRA_AGENTS)
    with http_client(url) as client:
        yield client
    process.stop()


def test_runs_on_a_served_queue_run_when_the_first_run_is_on_an_idle_one(extra_api):
    runs = [{"agent": "t_idle"}, {"agent": "echo", "input": {"i": 1}}, {"agent": "t_idle"},
            {"agent": "echo", "input": {"i": 3}}]
    response = extra_api.post("/batches", json={"runs": runs})
    assert response.status_code == 202, response.text
    batch_id, run_ids = response.json()["batch_id"], response.json()["run_ids"]
    try:
        for index in (1, 3):
            run = extra_api.get(f"/runs/{run_ids[index]}/wait", params={"timeout": 30}).json()
            assert run["status"] == "succeeded", run
            assert run["output"] == {"echo": {"i": index}}
        status = extra_api.get(f"/batches/{batch_id}").json()
        assert status["counts"] == {"succeeded": 2, "queued": 2} and status["done"] is False
    finally:
        extra_api.post(f"/batches/{batch_id}/cancel")
    status = extra_api.get(f"/batches/{batch_id}").json()
    assert status["counts"] == {"succeeded": 2, "cancelled": 2} and status["done"] is True


# -- the dispatch's lanes and the reaper's resume, on a broker no worker consumes ----------------

@pytest.fixture
def rt(redis_url):
    """A runtime on database 3 of the test Redis (emptied first): no worker consumes its queues."""
    import redis

    import tasks.demo  # noqa: F401 - echo
    import tests.agents_extra  # noqa: F401 - t_idle and t_gated
    from tasks.runtime import Runtime
    from tasks.settings import Settings

    url = urlunsplit(urlsplit(redis_url)._replace(path="/3"))
    redis.Redis.from_url(url).flushdb()
    runtime = Runtime(Settings(redis_url=url, agents="tasks.demo"))
    yield runtime
    runtime.close()


def task_ids(rt, queue: str) -> list[str]:
    """The task ids of the messages waiting on `queue`, oldest first (kombu LPUSHes)."""
    return [json.loads(m)["headers"]["id"] for m in reversed(rt.redis.lrange(queue, 0, -1))]


def submit(rt, agents: list[str]) -> tuple[str, list[str]]:
    from tasks.service import submit_batch

    created = submit_batch(rt, [{"agent": a, "input": {"i": i}} for i, a in enumerate(agents)])
    return created["batch_id"], created["run_ids"]


def test_each_queue_gets_a_dispatch_that_sends_its_own_runs_in_submit_order(rt):
    from tasks.dispatch import dispatch, dispatch_task_id

    batch_id, ids = submit(rt, ["t_idle", "echo", "t_gated", "echo", "t_idle", "echo"])
    for queue in ("idle", "default", "gate"):
        assert task_ids(rt, queue) == [dispatch_task_id(batch_id, queue)], queue
    rt.redis.delete("idle", "default", "gate")

    assert dispatch(rt, batch_id, queue="default") == 3
    assert task_ids(rt, "default") == [ids[1], ids[3], ids[5]]
    assert task_ids(rt, "idle") == [] and task_ids(rt, "gate") == []
    key = BATCH_KEY.format(batch_id=batch_id)
    assert int(rt.redis.hget(key, "dispatched")) == 3
    assert rt.redis.zscore(DISPATCHING_KEY, batch_id) is not None, "two lanes are left"
    assert dispatch(rt, batch_id, queue="default") == 0  # fenced: nothing is sent twice

    assert dispatch(rt, batch_id, queue="idle") == 2
    assert task_ids(rt, "idle") == [ids[0], ids[4]]
    assert dispatch(rt, batch_id, queue="gate") == 1
    assert int(rt.redis.hget(key, "dispatched")) == 6
    assert rt.redis.zscore(DISPATCHING_KEY, batch_id) is None, "wholly sent: out of the set"
    assert rt.store.dispatch_lanes(batch_id) == []


def test_a_lane_whose_runs_wait_on_another_queue_is_not_held_back(rt):
    """Each lane counts its own messages that still wait: the idle queue's backlog does not
    pause the default queue's dispatch."""
    from tasks.batch_store import RedisBatches

    batch_id, _ = submit(rt, ["t_idle"] * 3 + ["echo"] * 3)
    store: RedisBatches = rt.store
    _, _, idle = store.dispatch_chunk(batch_id, 10, 0.0, 2, "idle")
    assert len(idle) == 3 and store.dispatch_waiting(batch_id, "idle") == 3
    cursor, total, echo = store.dispatch_chunk(batch_id, 1, 0.0, 2, "default")
    assert (cursor, total, len(echo)) == (1, 3, 1)
    assert store.dispatch_waiting(batch_id, "default") == 1
    assert store.dispatch_chunk(batch_id, 1, 0.0, 2, "idle")[2] == []  # its lane is sent


def test_resume_sends_no_second_message_while_the_first_waits(rt):
    from tasks.dispatch import dispatch_task_id, resume_stalled
    from tasks.lost import LostMessages

    waiting = LostMessages(rt).waiting
    batch_id, _ = submit(rt, ["t_idle", "echo"])
    later = rt.redis.zscore(DISPATCHING_KEY, batch_id) + 1
    for tick in range(3):  # the reaper, minute after minute
        assert resume_stalled(rt, later + tick * (BATCH_DISPATCH_STALE_S + 1), waiting) == []
    assert task_ids(rt, "idle") == [dispatch_task_id(batch_id, "idle")]
    assert task_ids(rt, "default") == [dispatch_task_id(batch_id, "default")]

    rt.redis.delete("default")  # that message is lost
    much_later = later + 10 * BATCH_DISPATCH_STALE_S
    assert resume_stalled(rt, much_later, waiting) == [batch_id]
    assert task_ids(rt, "default") == [dispatch_task_id(batch_id, "default")]
    assert task_ids(rt, "idle") == [dispatch_task_id(batch_id, "idle")], "no second one"


@pytest.mark.parametrize("agents", [["echo", "echo"], ["t_idle", "echo"]])
def test_a_cancelled_batch_leaves_the_dispatching_set_and_is_never_resumed(rt, agents):
    from tasks.dispatch import resume_stalled
    from tasks.service import cancel_batch

    batch_id, _ = submit(rt, agents)
    assert rt.redis.zscore(DISPATCHING_KEY, batch_id) is not None
    rt.redis.delete("idle", "default")  # its dispatch messages are lost, even
    assert cancel_batch(rt, batch_id)["counts"] == {"cancelled": 2}
    assert rt.redis.zscore(DISPATCHING_KEY, batch_id) is None
    much_later = 1e12
    assert resume_stalled(rt, much_later) == []  # without a look at the broker, too
    assert task_ids(rt, "idle") == [] and task_ids(rt, "default") == []
    assert rt.store.stalled_dispatches(much_later) == []


def test_a_stalled_batch_found_wholly_sent_leaves_the_set_unresumed(rt):
    """A dispatcher that died after its last chunk, before it said so."""
    from tasks.dispatch import resume_stalled

    batch_id, _ = submit(rt, ["echo"] * 3)
    rt.redis.delete("default")
    rt.store.dispatch_chunk(batch_id, 10, 0.0)  # the whole batch claimed, the worker gone
    assert resume_stalled(rt, 1e12) == []
    assert rt.redis.zscore(DISPATCHING_KEY, batch_id) is None
    assert task_ids(rt, "default") == []


def test_resume_of_a_lost_dispatch_message_still_sends_it(rt):
    from tasks.dispatch import dispatch_task_id, resume_stalled

    batch_id, _ = submit(rt, ["echo"] * 3)
    rt.redis.delete("default")
    assert resume_stalled(rt, 1e12) == [batch_id]
    assert task_ids(rt, "default") == [dispatch_task_id(batch_id, "default")]
