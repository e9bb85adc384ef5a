"""Sends webhook messages: a loop in every worker (like the reaper), on its own thread and event
loop, so a slow or dead receiver never holds up a run; attempts run side by side, so it never
holds up another receiver either.

Each tick claims the due messages (tasks.webhook_store, leased for one attempt's longest time),
and tries each: the URL is checked again (DNS can change since submit) and the request goes to
the address that was checked. A 2xx delivers; a 410 fails at once; anything else (another status,
a timeout, a refused connection) is tried again after a growing pause until the maximum of
attempts, then fails.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

import httpx

from streaming.constants import (
    WEBHOOK_LEASE_MARGIN_S,
    WEBHOOK_MAX_IN_FLIGHT,
    WEBHOOK_POLL_INTERVAL_S,
    WEBHOOK_THREADS,
)
from streaming.events import utc_now_iso
from tasks import service
from tasks.errors import RunNotFound
from tasks.webhook_store import WebhookQueue
from tasks.webhook_urls import Target, WebhookRefused, resolve_webhook_url
from tasks.webhooks import (
    BATCH_MEMBER,
    PENDING,
    RUN_MEMBER,
    Attempt,
    Message,
    after_attempt,
    new_message,
    run_event_type,
    signed_headers,
)

if TYPE_CHECKING:
    from tasks.runtime import Runtime

log = logging.getLogger(__name__)

BATCH_DONE = "batch.done"


def make_message(rt: Runtime, member: str) -> Message | None:
    """The message telling that a run (or batch) ended, or None when it is gone."""
    if member.startswith(BATCH_MEMBER):
        try:
            data = service.batch_status(rt, member[len(BATCH_MEMBER):])
        except RunNotFound:
            return None
        event_type = BATCH_DONE
    else:
        data = service.get_run(rt, member[len(RUN_MEMBER):])
        if data is None or data["status"] not in service.TERMINAL:
            return None
        event_type = run_event_type(data["status"])
    if not data.get("webhook"):
        return None
    return new_message(data["webhook"], event_type, data.get("finished_at") or utc_now_iso(),
                       data)


class WebhookDelivery(threading.Thread):
    """The delivery loop of one process."""

    def __init__(self, queue: WebhookQueue, *, key: bytes, max_attempts: int,
                 backoff_scale: float, timeout_s: float, allow_private: bool,
                 make: Callable[[str], Message | None]) -> None:
        super().__init__(name="runcast-webhooks", daemon=True)
        self.queue = queue
        self.key = key
        self.max_attempts = max_attempts
        self.backoff_scale = backoff_scale
        self.timeout_s = timeout_s
        self.allow_private = allow_private
        self.make = make
        # an attempt (DNS lookup, then the request) takes at most 2 * timeout_s
        self.lease_s = 2 * timeout_s + WEBHOOK_LEASE_MARGIN_S
        self.stopping = threading.Event()

    def run(self) -> None:
        asyncio.run(self._main())

    def stop(self) -> None:
        self.stopping.set()

    async def _main(self) -> None:
        # its own threads: slow DNS lookups must not hold up other deliveries' store calls
        asyncio.get_running_loop().set_default_executor(
            ThreadPoolExecutor(WEBHOOK_THREADS, thread_name_prefix="runcast-webhooks"))
        in_flight: set[asyncio.Task] = set()
        failures = 0
        while not self.stopping.is_set():
            free = WEBHOOK_MAX_IN_FLIGHT - len(in_flight)
            if free > 0:
                try:
                    members = await asyncio.to_thread(self.queue.claim, free, self.lease_s)
                    failures = 0
                except Exception:
                    failures += 1
                    log.warning("claiming due webhooks failed; retrying", exc_info=failures == 1)
                    members = []
                for member in members:
                    task = asyncio.create_task(self._deliver(member))
                    in_flight.add(task)
                    task.add_done_callback(in_flight.discard)
            await asyncio.sleep(WEBHOOK_POLL_INTERVAL_S)
        for task in in_flight:  # their leases run out: another worker sends them again
            task.cancel()
        await asyncio.gather(*in_flight, return_exceptions=True)

    def _message(self, member: str) -> Message | None:
        message = self.queue.message(member)
        if message is None and (made := self.make(member)) is not None:
            message = self.queue.keep(member, made)
        return message

    async def _deliver(self, member: str) -> None:
        try:
            message = await asyncio.to_thread(self._message, member)
            if message is None or message.status.get("state") != PENDING:
                log.info("webhook of %s dropped: its run or batch is gone or done", member)
                await asyncio.to_thread(self.queue.drop, member)
                return
            attempt = await self.attempt(message)
            status, pause = after_attempt(message, attempt, self.max_attempts,
                                          self.backoff_scale)
            await asyncio.to_thread(self.queue.record, member, status, pause)
        except Exception:  # the lease brings it back
            log.warning("webhook of %s: the attempt could not be recorded", member, exc_info=True)
            return
        outcome = "retried" if pause is not None else status["state"]  # delivered, failed
        log.info("webhook %s of %s %s after attempt %s (%s)%s", message.id, member, outcome,
                 status["attempts"], status["last_status"] or status["last_error"],
                 f"; next in {pause:.1f} s" if pause is not None else "")

    async def attempt(self, message: Message) -> Attempt:
        """POST the message once, to the address its URL resolves to now."""
        try:
            async with asyncio.timeout(2 * self.timeout_s):
                target = await resolve_webhook_url(message.url, allow_private=self.allow_private,
                                                   timeout_s=self.timeout_s)
                async with asyncio.timeout(self.timeout_s):
                    return Attempt(status_code=await self._post(target, message))
        except WebhookRefused as exc:
            return Attempt(error=f"refused at delivery: {exc}")
        except (TimeoutError, httpx.TimeoutException):
            return Attempt(error=f"no answer within {self.timeout_s:g} s")
        except httpx.ConnectError as exc:
            return Attempt(error=f"could not connect: {exc}")
        except (httpx.HTTPError, OSError) as exc:
            return Attempt(error=f"{type(exc).__name__}: {exc}")

    async def _post(self, target: Target, message: Message) -> int:
        """The receiver's status code; its body is not read. A client per attempt: a pooled
        connection to one address must not serve another host name."""
        headers = signed_headers(self.key, message, int(time.time()))
        headers["host"] = target.host_header
        extensions = {"sni_hostname": target.server_name} if target.url.scheme == "https" else None
        async with (
            httpx.AsyncClient(timeout=self.timeout_s, follow_redirects=False,
                              trust_env=False) as client,
            client.stream("POST", target.pinned_url, content=message.body.encode(),
                          headers=headers, extensions=extensions) as response,
        ):
            return response.status_code


def delivery_for(rt: Runtime) -> WebhookDelivery | None:
    """The delivery loop `rt` runs, or None while webhooks are off (no key to sign with)."""
    settings = rt.settings
    key = settings.webhook_key
    if key is None:
        return None
    queue = rt.store.webhook_queue()
    return WebhookDelivery(
        queue, key=key, max_attempts=settings.webhook_max_attempts,
        backoff_scale=settings.webhook_backoff, timeout_s=settings.webhook_timeout,
        allow_private=settings.webhook_allow_private, make=functools.partial(make_message, rt),
    )

