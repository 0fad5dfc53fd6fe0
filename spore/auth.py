"""bore's challenge-response authentication (no I/O here).

The server sends a random UUID; the client answers with
``hex(HMAC-SHA256(SHA-256(secret), uuid.bytes))``.  The secret never crosses
the wire.
"""

from __future__ import annotations

import hashlib
import hmac
import uuid
from collections.abc import Iterable


def _key(secret: str) -> bytes:
    return hashlib.sha256(secret.encode("utf-8")).digest()


def answer(secret: str, challenge: uuid.UUID) -> str:
    """The tag a client with ``secret`` sends in reply to ``challenge``."""
    return hmac.new(_key(secret), challenge.bytes, hashlib.sha256).hexdigest()


def verify(secrets: Iterable[str], challenge: uuid.UUID, tag: str) -> bool:
    """Whether ``tag`` answers ``challenge`` for any one of ``secrets``."""
    return matching(secrets, challenge, tag) is not None


def matching(secrets: Iterable[str], challenge: uuid.UUID, tag: str) -> str | None:
    """The one of ``secrets`` whose answer to ``challenge`` is ``tag``, or None.

    Every secret is compared, in constant time, so the time taken does not
    tell which one matched or how much of the tag was right.
    """
    offered = tag.encode("utf-8", "replace")
    found = None
    for secret in secrets:
        if hmac.compare_digest(answer(secret, challenge).encode(), offered):
            found = secret
    return found
