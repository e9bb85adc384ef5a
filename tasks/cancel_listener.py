"""The cancel channel's listener: Redis pub/sub delivering cancel requests to this process."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable

import redis

from streaming.constants import CANCEL_CHANNEL

log = logging.getLogger(__name__)


class CancelSubscriber(threading.Thread):
    """Listens on the cancel channel (Redis pub/sub) and delivers to this process's runs."""

    def __init__(self, client: redis.Redis, deliver: Callable[[str, str | None], None]) -> None:
        super().__init__(name="runcast-cancels", daemon=True)
        self.client = client
        self.deliver = deliver
        self.ready = threading.Event()
        self.stopping = threading.Event()

    def run(self) -> None:
        failures = 0
        while not self.stopping.is_set():
            pubsub = self.client.pubsub(ignore_subscribe_messages=True)
            try:
                pubsub.subscribe(CANCEL_CHANNEL)
                self.ready.set()
                failures = 0
                while not self.stopping.is_set():
                    message = pubsub.get_message(timeout=1.0)
                    if message and message["type"] == "message":
                        body = json.loads(message["data"])
                        self.deliver(body["run_id"], body.get("reason"))
            except Exception:
                if self.stopping.is_set():
                    return  # the runtime closed its client under us: not a lost subscription
                failures += 1
                log.warning("cancel subscription lost; reconnecting", exc_info=failures == 1)
                time.sleep(0.5)
            finally:
                try:
                    pubsub.close()
                except Exception:
                    log.debug("closing a lost cancel subscription failed", exc_info=True)

    def stop(self) -> None:
        self.stopping.set()
