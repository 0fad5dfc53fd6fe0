"""Which of a tunnel's waiting visitors its client is told of, and when.

bore's server tells its client of every visitor at once.  A flood of
visitors then floods the client too: it dials the local service and the
server for each, most of them for visitors that are gone by the time it
claims them, and a real visitor's ``Connection`` frame waits behind all of
the flood's.  So at most ``window`` visitors are announced and not yet
claimed at a time; the others wait their turn.  Each time a place frees up,
the next to be announced is the longest-waiting visitor of the source that
has the fewest connections open on the tunnel: one real visitor among a
flood from a few hundred addresses goes next, not last.

Pure logic: nothing here knows of Twisted.
"""

from __future__ import annotations

from collections import deque
from itertools import count
from typing import Callable, Generic, Hashable, TypeVar

V = TypeVar("V", bound=Hashable)


class Announcements(Generic[V]):
    """The visitors announced to a tunnel's client, and those waiting to be, by source."""

    def __init__(self, window: int, open_from: Callable[[str], int]) -> None:
        if window < 1:
            raise ValueError("at least one visitor must be announced at a time")
        self.window = window
        self._open_from = open_from
        self._announced: set[V] = set()
        self._waiting: dict[str, deque[tuple[int, V]]] = {}
        self._source: dict[V, str] = {}
        self._arrivals = count()

    @property
    def announced(self) -> int:
        """Visitors announced and not yet claimed."""
        return len(self._announced)

    def __len__(self) -> int:
        """Visitors waiting to be announced."""
        return len(self._source)

    def arrived(self, visitor: V, source: str) -> bool:
        """A visitor arrived from ``source``: True if it is to be announced now, else it waits its turn."""
        if len(self._announced) < self.window:
            self._announced.add(visitor)
            return True
        self._waiting.setdefault(source, deque()).append((next(self._arrivals), visitor))
        self._source[visitor] = source
        return False

    def left(self, visitor: V) -> V | None:
        """``visitor`` waits no more (claimed, expired, shed or gone): the visitor to announce in its place, if any."""
        if visitor in self._announced:
            self._announced.discard(visitor)
            return self._next()
        source = self._source.pop(visitor, None)
        if source is not None:
            waiting = self._waiting[source]
            waiting.remove(next(entry for entry in waiting if entry[1] is visitor))
            if not waiting:
                del self._waiting[source]
        return None

    def _next(self) -> V | None:
        if not self._waiting:
            return None
        source = min(self._waiting, key=lambda s: (self._open_from(s), self._waiting[s][0][0]))
        waiting = self._waiting[source]
        _, visitor = waiting.popleft()
        if not waiting:
            del self._waiting[source]
        del self._source[visitor]
        self._announced.add(visitor)
        return visitor
