"""The Celery app (`celery -A tasks worker`): JSON only, late acks, events on, one task per agent."""

from __future__ import annotations

from celery import Celery, signals

from tasks import registry
from tasks.settings import Settings

app = Celery("runcast")


# A message taken by a worker that died before it claimed the run (prefetched, or on its way to a
# pool process) comes back to its queue this long after its delivery: a live worker's kombu puts
# it back (checked every RESTORE_INTERVAL_S). Redelivering the message of a run that is running or
# ended is harmless: the claim (tasks/lua.py CLAIM) is fenced, so that execution is skipped.
BROKER_VISIBILITY_TIMEOUT_S = 45
BROKER_RESTORE_INTERVAL_S = 5


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


def configure_app(settings: Settings) -> None:
    embedded = settings.embedded
    app.conf.update(
        broker_url="memory://localhost/" if embedded else settings.broker,
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
        task_routes=ROUTES,
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


ROUTES: dict[str, dict[str, str]] = {}


def _register_task(spec: registry.AgentSpec) -> None:
    from tasks import monitor
    from tasks.execute import execute_run

    def run(self, run_id: str, attempt: int = 1):
        result = execute_run(spec, self, run_id, attempt)
        end = monitor.ending(self, result)  # Flower mirrors the run (tasks/monitor.py)
        if end is not None:
            raise end
        return result

    ROUTES[spec.task_name] = {"queue": spec.queue}  # Celery's routing, per agent
    run.__name__ = f"agent_{spec.name}"
    run.__doc__ = spec.description
    app.task(
        name=spec.task_name,
        bind=True,
        acks_late=True,
        reject_on_worker_lost=True,
        rate_limit=spec.rate_limit,
        ignore_result=True,
        max_retries=0,
        throws=(monitor.RunFailed,),  # an expected ending: logged without a traceback
    )(run)


registry.on_register(_register_task)


@signals.worker_ready.connect
def _start_reaper(sender=None, **_kwargs) -> None:
    from tasks.worker import start_reaper

    start_reaper(getattr(sender, "hostname", None))


@signals.worker_shutdown.connect
def _stop_reaper(**_kwargs) -> None:
    from tasks.worker import stop_reaper

    stop_reaper()


@signals.worker_ready.connect
def _start_webhooks(**_kwargs) -> None:
    from tasks.runtime import runtime
    from tasks.webhook_delivery import start_delivery

    start_delivery(runtime())


@signals.worker_shutdown.connect
def _stop_webhooks(**_kwargs) -> None:
    from tasks.webhook_delivery import stop_delivery

    stop_delivery()


from tasks import dispatch as _dispatch  # noqa: F401 - registers runcast.dispatch_batch
