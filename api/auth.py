"""API keys and per-run stream tokens, checked in constant time."""

from __future__ import annotations

import hashlib
import hmac


def stream_token(secret: str, run_id: str) -> str:
    """Grants read access to one run: an HMAC of its id under the server's secret."""
    return hmac.new(secret.encode(), b"stream:" + run_id.encode(), hashlib.sha256).hexdigest()[:40]


def valid_token(secret: str, run_id: str, token: str | None) -> bool:
    # bytes: compare_digest refuses str with non-ASCII characters (a TypeError, a 500)
    return bool(token) and hmac.compare_digest(
        stream_token(secret, run_id).encode(), token.encode("utf-8", "surrogateescape")
    )


def valid_key(keys: list[str], presented: str | None) -> bool:
    """True when `presented` equals one of `keys`; every key is compared, in constant time."""
    if not presented:
        return False
    found = False
    for key in keys:
        found |= hmac.compare_digest(key.encode(), presented.encode("utf-8", "surrogateescape"))
    return found
