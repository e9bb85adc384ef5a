"""Where a webhook may go: http(s) URLs whose host is, and resolves to, public addresses only.

Checked at submit and again at every delivery (DNS can change in between). A delivery connects
to the very address it checked (`Target.pinned_url`), so nothing resolves the name again.
Parsing is httpx's at both ends: the host checked is the host connected to.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass

import httpx

from streaming.constants import WEBHOOK_MAX_URL_CHARS, WEBHOOK_RESOLVE_TIMEOUT_S
from tasks.errors import InvalidRequest

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
NAT64 = ipaddress.IPv6Network("64:ff9b::/96")  # the IPv4 address sits in the last 32 bits
ALLOW_HINT = "set RUNCAST_WEBHOOK_ALLOW_PRIVATE=true to allow private networks"

_resolver = ThreadPoolExecutor(max_workers=4, thread_name_prefix="runcast-webhook-dns")


class WebhookRefused(InvalidRequest):
    """Raised when a webhook URL is not one runcast sends to."""


@dataclass(frozen=True)
class Target:
    """A checked webhook URL and the address its requests connect to."""

    url: httpx.URL
    address: str

    @property
    def pinned_url(self) -> httpx.URL:
        return self.url.copy_with(host=self.address)

    @property
    def host_header(self) -> str:
        return self.url.netloc.decode("ascii")

    @property
    def server_name(self) -> str:
        """The name TLS verifies the certificate against (SNI)."""
        return self.url.raw_host.decode("ascii")


def parse_url(url: str) -> httpx.URL:
    """The URL if its form is one runcast sends to; else WebhookRefused saying why."""
    if not isinstance(url, str) or not url:
        raise WebhookRefused("webhook must be an http(s) URL")
    if len(url) > WEBHOOK_MAX_URL_CHARS:
        raise WebhookRefused(f"webhook URL is longer than {WEBHOOK_MAX_URL_CHARS} characters")
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, ValueError, TypeError) as exc:
        raise WebhookRefused(f"webhook is not a valid URL: {exc}") from None
    if parsed.scheme not in ("http", "https"):
        scheme = parsed.scheme or "none"
        raise WebhookRefused(f"webhook URL must be http or https, not {scheme!r}")
    if not parsed.raw_host:
        raise WebhookRefused("webhook URL has no host")
    if parsed.userinfo:
        raise WebhookRefused("webhook URL must not hold credentials (user:password@)")
    return parsed


def address_problem(address: IPAddress) -> str | None:
    """Why `address` is no place for a webhook (loopback, private, ...), or None if public."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:  # ::ffff:a.b.c.d is a.b.c.d
            return address_problem(address.ipv4_mapped)
        inner = address.sixtofour  # other ways an IPv6 address carries an IPv4 one
        if inner is None and address in NAT64:
            inner = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        if inner is None and address.teredo is not None:
            inner = address.teredo[1]
        if inner is not None and (problem := address_problem(inner)):
            return problem
    checks = (
        ("a loopback", address.is_loopback), ("a link-local", address.is_link_local),
        ("an unspecified", address.is_unspecified), ("a multicast", address.is_multicast),
        ("a private", address.is_private), ("a reserved", address.is_reserved),
        ("a non-public", not address.is_global),
    )
    for name, hit in checks:
        if hit:
            return f"{name} address"
    return None


def _port(url: httpx.URL) -> int:
    return url.port or (443 if url.scheme == "https" else 80)


def _choose(url: httpx.URL, infos: list, allow_private: bool) -> Target:
    """Every address the host resolves to must be public; the first one is connected to."""
    addresses = []
    for info in infos:
        text = info[4][0].split("%", 1)[0]  # an IPv6 zone id is not part of the address
        if text not in addresses:
            addresses.append(text)
    if not addresses:
        raise WebhookRefused(f"webhook host {url.host!r} resolves to no address")
    if not allow_private:
        for text in addresses:
            problem = address_problem(ipaddress.ip_address(text))
            if problem:
                what = f"is {problem}" if text == url.host else f"resolves to {text}, {problem}"
                raise WebhookRefused(
                    f"webhook host {url.host!r} {what}: webhooks go to public addresses only "
                    f"({ALLOW_HINT})"
                )
    return Target(url, addresses[0])


def _lookup(url: httpx.URL) -> list:
    return socket.getaddrinfo(url.raw_host.decode("ascii"), _port(url), type=socket.SOCK_STREAM)


def check_webhook_url(url: str, *, allow_private: bool,
                      timeout_s: float = WEBHOOK_RESOLVE_TIMEOUT_S) -> Target:
    """Submit-time check (blocking, bounded by `timeout_s`); WebhookRefused says what is wrong."""
    parsed = parse_url(url)
    future = _resolver.submit(_lookup, parsed)
    try:
        infos = future.result(timeout=timeout_s)
    except FutureTimeout:
        raise WebhookRefused(
            f"webhook host {parsed.host!r} did not resolve within {timeout_s:g} s"
        ) from None
    except (OSError, UnicodeError) as exc:
        raise WebhookRefused(f"webhook host {parsed.host!r} does not resolve: {exc}") from None
    return _choose(parsed, infos, allow_private)


async def resolve_webhook_url(url: str, *, allow_private: bool, timeout_s: float) -> Target:
    """Delivery-time check on the running event loop (the lookup runs in its executor)."""
    parsed = parse_url(url)
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(timeout_s):
            infos = await loop.getaddrinfo(parsed.raw_host.decode("ascii"), _port(parsed),
                                           type=socket.SOCK_STREAM)
    except TimeoutError:
        raise OSError(f"host {parsed.host!r} did not resolve within {timeout_s:g} s") from None
    return _choose(parsed, infos, allow_private)


def accept_webhook(url: str, *, signing: bool, allow_private: bool) -> str:
    """The webhook of a run or batch being submitted, checked; WebhookRefused (422) otherwise."""
    if not signing:
        raise WebhookRefused(
            "webhooks are turned off on this server: RUNCAST_WEBHOOK_SECRET is not set"
        )
    check_webhook_url(url, allow_private=allow_private)
    return url
