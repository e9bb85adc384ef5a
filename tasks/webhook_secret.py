"""The webhook signing key: `whsec_<base64>`, as Standard Webhooks write it."""

from __future__ import annotations

import base64
import binascii

SECRET_PREFIX = "whsec_"


def decode_webhook_secret(secret: str) -> bytes:
    """The key bytes of `whsec_<base64>`; ValueError (naming the variable) when malformed."""
    problem = None
    key = b""
    if not secret.startswith(SECRET_PREFIX):
        problem = f"it must start with {SECRET_PREFIX!r}"
    else:
        encoded = secret[len(SECRET_PREFIX):]
        try:
            key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
        except (binascii.Error, ValueError):
            problem = f"the part after {SECRET_PREFIX!r} is not base64"
        else:
            if not key:
                problem = "the key is empty"
    if problem:
        raise ValueError(
            f"RUNCAST_WEBHOOK_SECRET is malformed: {problem}; expected whsec_<base64 key>, "
            "for example whsec_ followed by `openssl rand -base64 32`"
        )
    return key
