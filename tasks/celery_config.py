"""Celery's configuration for runcast: JSON only, late acks, events on; broker outage hardening."""

from __future__ import annotations

from celery import Celery

from tasks.constants import BROKER_RESTORE_INTERVAL_S, BROKER_VISIBILITY_TIMEOUT_S
from tasks.memory_transport import TRANSPORT as MEMORY_TRANSPORT
from tasks.redis_transport import transport_for
from tasks.settings import Settings


def _closed_channel_is_a_connection_error() -> None:
    """Let a Celery worker survive a broker outage that begins while it runs a task.

    kombu's Redis channel, interrupted mid-poll by the lost connection, is closed a second time
    by Celery's consumer after its transport was detached; the unacknowledged messages it then
    tries to put back make it build a pool from `None` and raise AttributeError, which Celery
    takes for an "Unrecoverable error": the worker stops for good. Raised as the connection error
    it is, kombu and Celery ignore it and reconnect (the messages come back after the visibility
    timeout instead).
    """
    from kombu.transport import redis as kombu_redis
    from redis.exceptions import ConnectionError as RedisConnectionError

    connparams = kombu_redis.Channel._connparams
    if getattr(connparams, "runcast_patched", False):
        return

    def _connparams(self, asynchronous=False):
        if self.connection.client is None:
            raise RedisConnectionError("the broker connection of this channel was closed")
        return connparams(self, asynchronous)

    _connparams.runcast_patched = True
    kombu_redis.Channel._connparams = _connparams


_closed_channel_is_a_connection_error()


def configure_app(app: Celery, settings: Settings) -> None:
    """Configure `app` for `settings` (its task routes follow the agents registered on it)."""
    embedded = settings.embedded
    app.conf.update(
        broker_url="memory://localhost/" if embedded else settings.broker,
        broker_transport=MEMORY_TRANSPORT if embedded else transport_for(settings.broker),
        result_backend="cache+memory://" if embedded else settings.redis_url,
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        result_accept_content=["json"],
        task_acks_late=True,
        task_acks_on_failure_or_timeout=True,  # a failed run's message is done with
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        worker_send_task_events=True,
        task_send_sent_event=True,
        task_track_started=False,
        task_default_queue="default",
        task_routes=routes(app),
        result_expires=settings.run_ttl,
        broker_transport_options=({"polling_interval": 0.01} if embedded else {
            "visibility_timeout": BROKER_VISIBILITY_TIMEOUT_S,
            "unacked_restore_interval": BROKER_RESTORE_INTERVAL_S,
            "unacked_restore_throttle": 1,
        }),
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        imports=settings.agent_modules,
        timezone="UTC",
        enable_utc=True,
    )


def routes(app: Celery) -> dict[str, dict[str, str]]:
    """The app's task routes (Celery's routing, per agent), filled as agents register on it."""
    if not hasattr(app, "runcast_routes"):
        app.runcast_routes = {}
    return app.runcast_routes


def new_app(settings: Settings) -> Celery:
    """A Celery app of its own for `settings` (a second configuration in this process)."""
    app = Celery("runcast")
    configure_app(app, settings)
    return app
