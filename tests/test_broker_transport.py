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


def _task_events(events, uuids: set[str], wait_s: float = 5.0) -> list[tuple[str, str]]:
    """(type, uuid) of the Celery task events of `uuids` heard by `events` (a psubscribe to
    Celery's event channels, which other tests' workers also use): waits up to `wait_s` for the
    first, then takes what else arrives within 0.3 s."""
    heard: list[tuple[str, str]] = []
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        message = events.get_message(timeout=0.1)
        if not message or message["type"] != "pmessage":
            continue
        body = json.loads(base64.b64decode(json.loads(message["data"])["body"]))
        for event in body if isinstance(body, list) else [body]:  # a worker's `.multi` is a list
            if event.get("uuid") in uuids:
                heard.append((event["type"], event["uuid"]))
                deadline = min(deadline, time.monotonic() + 0.3)
    return heard


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
        assert _task_events(events, {"a-run-id"}) == [("task-sent", "a-run-id")]
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


def _consume(redis_url: str, queue_name: str, *, prefetch: int, no_ack: bool = False,
             seen_registered: list | None = None):
    """A kombu consumer of `queue_name` on runcast's transport: (connection, channel, received)."""
    from kombu import Consumer, Queue

    app = new_app(Settings(redis_url=redis_url))
    connection = app.connection_for_read()
    channel = connection.channel()
    channel.basic_qos(prefetch_count=prefetch)
    received: list = []

    def on_message(body, message):
        if seen_registered is not None:  # is it registered as unacknowledged already?
            seen_registered.append(channel.client.hexists(channel.unacked_key,
                                                          message.delivery_tag))
        received.append((body, message))

    queue = Queue(queue_name, routing_key=queue_name, channel=channel)
    queue.declare()
    Consumer(channel, queues=[queue], callbacks=[on_message], no_ack=no_ack).consume()
    return connection, channel, received


def _publish(redis_url: str, queue_name: str, n: int) -> None:
    from kombu import Producer, Queue

    app = new_app(Settings(redis_url=redis_url))
    with app.connection_for_write() as connection:
        queue = Queue(queue_name, routing_key=queue_name)
        producer = Producer(connection.default_channel)
        for i in range(n):
            producer.publish({"i": i}, routing_key=queue_name, declare=[queue],
                             serializer="json")


def test_a_fetch_takes_several_messages_within_the_prefetch_limit(redis_url, redis_client):
    """After BRPOP, the channel takes more of the queue in one round trip: as many as the
    prefetch limit allows, in the order sent, each registered as unacknowledged before any
    callback sees it; an ack removes the registration."""
    name = f"bulk-{time.monotonic_ns()}"
    _publish(redis_url, name, 10)
    registered: list = []
    connection, channel, received = _consume(redis_url, name, prefetch=4,
                                             seen_registered=registered)
    try:
        connection.drain_events(timeout=5)
        assert [body["i"] for body, _ in received] == [0, 1, 2, 3]  # the limit, in order
        assert registered == [True] * 4
        assert redis_client.llen(name) == 6
        assert redis_client.hlen(channel.unacked_key) == 4
        for _, message in received:
            message.ack()
        assert redis_client.hlen(channel.unacked_key) == 0
        connection.drain_events(timeout=5)  # room again: the next four
        assert [body["i"] for body, _ in received[4:]] == [4, 5, 6, 7]
        for _, message in received[4:]:
            message.ack()
        assert channel.qos.registered == set()  # every registered one was delivered
    finally:
        redis_client.delete(name)
        connection.release()


def test_a_consumer_without_acks_keeps_one_message_per_fetch(redis_url, redis_client):
    """no_ack: nothing to register, nothing left in the unacked hash to be redelivered."""
    name = f"bulk-noack-{time.monotonic_ns()}"
    _publish(redis_url, name, 3)
    connection, channel, received = _consume(redis_url, name, prefetch=10, no_ack=True)
    try:
        connection.drain_events(timeout=5)
        assert [body["i"] for body, _ in received] == [0]
        assert redis_client.hlen(channel.unacked_key) == 0
        assert redis_client.llen(name) == 2
    finally:
        redis_client.delete(name)
        connection.release()


def test_a_message_sent_into_a_pipeline_goes_out_only_with_it(redis_url, redis_client):
    """enqueue(into=pipeline): the message and its task-sent event join the caller's MULTI;
    nothing reaches Redis until the caller executes it, and a dropped pipeline sends nothing."""
    from tasks.broker import can_enqueue_into, enqueue

    app = new_app(Settings(redis_url=redis_url))
    assert can_enqueue_into(app, redis_url)
    events = redis_client.pubsub()
    events.psubscribe("*celeryev*")
    events.get_message(timeout=1)
    queue = f"into-test-{time.monotonic_ns()}"
    try:
        dropped = redis_client.pipeline(transaction=True)
        enqueue(app, "dropped-run", "no-such-agent", queue=queue, input_json="{}", into=dropped)
        assert redis_client.llen(queue) == 0  # held in the pipeline, never executed

        pipe = redis_client.pipeline(transaction=True)
        pipe.set(f"{queue}:record", "stored")
        enqueue(app, "a-run-id", "no-such-agent", queue=queue, input_json="{}", into=pipe)
        assert redis_client.llen(queue) == 0 and not redis_client.exists(f"{queue}:record")
        pipe.execute()
        assert redis_client.get(f"{queue}:record") == b"stored"
        assert redis_client.llen(queue) == 1
        assert b'"a-run-id"' in redis_client.lindex(queue, 0)
        heard = _task_events(events, {"a-run-id", "dropped-run"})
        assert heard == [("task-sent", "a-run-id")]  # not the dropped one
        enqueue(app, "later-run", "no-such-agent", queue=queue, input_json="{}")
        assert redis_client.llen(queue) == 2  # outside the block, a publish goes out at once
    finally:
        redis_client.delete(queue, f"{queue}:record")
        events.close()


def test_only_a_broker_on_the_run_stores_redis_takes_messages_into_its_pipelines(redis_url):
    from tasks.broker import can_enqueue_into

    same = new_app(Settings(redis_url=redis_url))
    assert can_enqueue_into(same, redis_url)
    other_db = redis_url.rsplit("/", 1)[0] + "/9"
    assert not can_enqueue_into(new_app(Settings(redis_url=redis_url, broker_url=other_db)),
                                redis_url)
    amqp = new_app(Settings(redis_url=redis_url, broker_url="amqp://guest@127.0.0.1:5672//"))
    assert not can_enqueue_into(amqp, redis_url)
    prefixed = new_app(Settings(redis_url=redis_url))
    prefixed.conf.broker_transport_options = {"global_keyprefix": "x:"}
    assert not can_enqueue_into(prefixed, redis_url)


def test_a_failed_bulk_fetch_keeps_the_message_in_hand(server, admin):
    """Redis refuses the extra RPOP (here: an ACL user without it): the message BRPOP gave goes
    on through kombu's own registration, and the rest stay queued for the next fetch."""
    admin.acl_setuser("nofetch", enabled=True, passwords=["+pw"], keys=["*"], channels=["*"],
                      commands=["+@all", "-rpop"])
    url = server.url.replace("redis://", "redis://nofetch:pw@")
    name = f"bulk-refused-{time.monotonic_ns()}"
    _publish(server.url, name, 3)
    connection, channel, received = _consume(url, name, prefetch=10)
    try:
        connection.drain_events(timeout=5)
        assert [body["i"] for body, _ in received] == [0]
        assert admin.llen(name) == 2
        assert admin.hlen(channel.unacked_key) == 1  # registered by kombu, one by one
        assert channel.qos.registered == set()
        received[0][1].ack()
        assert admin.hlen(channel.unacked_key) == 0
    finally:
        connection.release()
