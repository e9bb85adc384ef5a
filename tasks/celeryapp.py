"""The Celery app (`celery -A tasks worker`): JSON only, late acks, events on, one task per agent."""

from __future__ import annotations

from celery import Celery, signals

from tasks import registry
from tasks.settings import Settings

app = Celery("runcast")


def configure_app(settings: Settings) -> None:
    embedded = settings.embedded
    longest_run_s = settings.default_timeout + settings.cancel_grace
    app.conf.update(
        broker_url="memory://localhost/" if embedded else settings.broker,
        result_backend="cache+memory://" if embedded else settings.redis_url,
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        result_accept_content=["json"],
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        worker_send_task_events=True,
        task_send_sent_event=True,
        task_track_started=False,
        task_default_queue="default",
        result_expires=settings.run_ttl,
        # an unacknowledged message comes back only after the longest run could have finished
        broker_transport_options={"visibility_timeout": int(longest_run_s) + 3600}
        | ({"polling_interval": 0.01} if embedded else {}),
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        imports=settings.agent_modules,
        timezone="UTC",
        enable_utc=True,
    )


def _register_task(spec: registry.AgentSpec) -> None:
    from tasks.execute import execute_run

    def run(self, run_id: str, attempt: int = 1):
        return execute_run(spec, self, run_id, attempt)

    run.__name__ = f"agent_{spec.name}"
    run.__doc__ = spec.description
    app.task(
        name=spec.task_name,
        bind=True,
        acks_late=True,
        reject_on_worker_lost=True,
        queue=spec.queue,
        rate_limit=spec.rate_limit,
        ignore_result=True,
        max_retries=0,
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
