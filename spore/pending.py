"""Visitors waiting for a client to claim them, each for a limited time."""

from __future__ import annotations

import uuid
from typing import Generic, Protocol, TypeVar

from twisted.internet.interfaces import IDelayedCall, IReactorTime


class Expirable(Protocol):
    def expire(self) -> None:
        """Called when nobody claimed this visitor in time."""


V = TypeVar("V", bound=Expirable)


class PendingVisitors(Generic[V]):
    """A table of unclaimed visitors keyed by the UUID each was announced with.

    A visitor can be claimed once; one not claimed within ``timeout`` seconds
    is removed and told to ``expire``.
    """

    def __init__(self, clock: IReactorTime, timeout: float) -> None:
        self._clock = clock
        self._timeout = timeout
        self._waiting: dict[uuid.UUID, tuple[V, IDelayedCall]] = {}

    def __len__(self) -> int:
        return len(self._waiting)

    def add(self, visitor: V) -> uuid.UUID:
        """Hold ``visitor`` and return the fresh id a client must claim it by."""
        id = uuid.uuid4()
        expiry = self._clock.callLater(self._timeout, self._expire, id)
        self._waiting[id] = (visitor, expiry)
        return id

    def get(self, id: uuid.UUID) -> V | None:
        """The visitor held as ``id``, left where it is; or None."""
        entry = self._waiting.get(id)
        return None if entry is None else entry[0]

    def claim(self, id: uuid.UUID) -> V | None:
        """Take the visitor held as ``id``, or None if there is none (any more)."""
        entry = self._waiting.pop(id, None)
        if entry is None:
            return None
        visitor, expiry = entry
        expiry.cancel()
        return visitor

    def discard(self, id: uuid.UUID) -> None:
        """Forget ``id`` (its visitor went away)."""
        self.claim(id)

    def _expire(self, id: uuid.UUID) -> None:
        visitor, _ = self._waiting.pop(id)
        visitor.expire()
