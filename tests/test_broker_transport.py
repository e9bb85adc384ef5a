"""The broker side of a submit: runcast's kombu Redis transport and a run's message in one round
trip. Real redis-server (the session's), real kombu and Celery."""

from __future__ import annotations

import base64
import json
import time

import pytest
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError

from streaming.backends.hub import PubSubHub
from tasks.celery_config import new_app
from tasks.redis_transport import TRANSPORT, Channel, transport_for
from tasks.settings import Settings
from tests.redis_server import free_port


def test_plain_redis_brokers_get_runcast_transport_others_keep_kombus():
    assert transport_for("redis://127.0.0.1:6380/0") == TRANSPORT
    for url in ("rediss://127.0.0.1:6380/0", "amqp://guest@127.0.0.1:5672//",
                "sentinel://127.0.0.1:26379", "memory://localhost/"):
        assert transport_for(url) is None, url


def test_a_channel_keeps_one_client_and_a_new_pool_gets_a_new_one(redis_url):
    app = new_app(Settings(redis_url=redis_url))
    with app.connection_for_write() as connection:
        channel = connection.default_channel
        assert isinstance(channel, Channel)
        first = channel._create_client()
        assert channel._create_client() is first
        assert first.ping()
        channel._pool = None  # what kombu does when it drops its pool (a reconnect)
        second = channel._create_client()
        assert second is not first and second.connection_pool is channel.pool
        assert second.ping()
        assert channel._create_client(asynchronous=True) is not second


def test_enqueue_sends_the_message_and_its_task_sent_event(redis_url, redis_client):
    """tasks.broker.enqueue sends the task and its task-sent event (Flower's) in one publish
    batch: the queue holds the message, and a subscriber of Celery's event channel hears
    `task-sent` for the run."""
    from tasks.broker import enqueue

    app = new_app(Settings(redis_url=redis_url))
    events = redis_client.pubsub()
    events.psubscribe("*celeryev*")
    events.get_message(timeout=1)  # the psubscribe reply
    queue = f"transport-test-{time.monotonic_ns()}"
    try:
        enqueue(app, "a-run-id", "no-such-agent", queue=queue, input_json="{}")
        assert redis_client.llen(queue) == 1
        assert b'"a-run-id"' in redis_client.lindex(queue, 0)
        heard = []
        deadline = time.monotonic() + 5
        while not heard and time.monotonic() < deadline:
            message = events.get_message(timeout=0.5)
            if message and message["type"] == "pmessage":
                heard.append(message["data"])
        assert heard, "no task-sent event"
        event = json.loads(base64.b64decode(json.loads(heard[0])["body"]))
        assert event["type"] == "task-sent" and event["uuid"] == "a-run-id"
    finally:
        redis_client.delete(queue)
        events.close()


async def test_a_subscription_redis_cannot_make_fails_fast():
    """Redis down: listening raises redis' ConnectionError (the API answers 503) within the
    confirmation bound, instead of waiting for a confirmation that never comes."""
    client = aioredis.Redis(host="127.0.0.1", port=free_port(), socket_connect_timeout=1)
    hub = PubSubHub(client, decode=lambda data: data)
    started = time.monotonic()
    with pytest.raises(RedisConnectionError):
        async with hub.listen("runcast:nothing"):
            pass
    assert time.monotonic() - started < 10
    assert hub.channels == 0
    await hub.aclose()
    await client.aclose()
