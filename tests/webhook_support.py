"""A real webhook receiver on 127.0.0.1 for the webhook tests.

It answers each request as its script says (a status code, or HANG: hold the request without
answering), and checks every request's signature with the `standardwebhooks` package, the
reference implementation of the spec, not runcast's code.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from tests.redis_server import free_port

SECRET = "whsec_" + base64.b64encode(b"runcast-webhook-test-key-32bytes").decode()
HANG = "hang"  # hold the request until the receiver stops, never answering


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    at: float
    verified: bool
    error: str | None = None

    @property
    def message(self) -> dict[str, Any]:
        return json.loads(self.body)

    @property
    def webhook_id(self) -> str:
        return self.headers["webhook-id"]


@dataclass
class Receiver:
    """`with Receiver([500, 500, 200]) as hook:` serves at `hook.url`; after the script runs
    out it answers `then` to every request."""

    script: list[int | str] = field(default_factory=list)
    then: int | str = 200
    secret: str = SECRET
    received: list[Received] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._verifier = Webhook(self.secret)
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # the http.server API
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                headers = {k.lower(): v for k, v in self.headers.items()}
                answer = receiver._record(headers, body)
                if answer == HANG:
                    receiver._stopping.wait()
                    return
                self.send_response(int(answer))
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def _record(self, headers: dict[str, str], body: bytes) -> int | str:
        try:
            self._verifier.verify(body, headers)
            verified, error = True, None
        except (WebhookVerificationError, ValueError, KeyError) as exc:
            verified, error = False, repr(exc)
        with self._lock:
            index = len(self.received)
            self.received.append(Received(headers, body, time.monotonic(), verified, error))
            return self.script[index] if index < len(self.script) else self.then

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def requests(self) -> list[Received]:
        with self._lock:
            return list(self.received)

    def __enter__(self) -> Self:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stopping.set()
        self.server.shutdown()
        self.server.server_close()


def unreachable_url() -> str:
    """A loopback URL where nothing listens (a refused connection)."""
    return f"http://127.0.0.1:{free_port()}/hook"
