"""Who gets one of a bounded number of slots, and who gives one up when they run out.

The control port's handshakes and each tunnel's unclaimed visitors are held
in tables like this.  A full table does not turn newcomers away (whoever
filled it would own the door): it sheds a connection to make room, chosen so
that a flood sheds its own.

- Each *source* (see :func:`spore.access.source_key`) holds at most
  ``share`` slots, plus up to as many again that its ``allowance`` says it
  is owed (a tunnel's owner is owed a data connection for each visitor it
  was told of and has not claimed yet).  A newcomer past that sheds its
  source's own longest-stalled connection.
- When every slot is taken, the newcomer sheds a connection of the source
  that weighs the most (by default: holds the most slots beyond its
  allowance); of that source's connections, the one that has gone longest
  without progress.  If the newcomer's own source would weigh the most, it
  sheds one of its own.  Only the ``SCAN`` longest-stalled connections are
  looked at to find the heaviest source, so that admitting costs the same in
  any flood.  A newcomer is refused only when none of these may be shed.

Connections are kept in the order of their last progress (arrival counts as
progress), so "longest without progress" is the front of the table and no
clock is needed here.  A connection can be ``kept``: it holds its slot but
is never shed (a visitor its client was told of, whose data connection is on
its way).  Pure logic: nothing here knows of Twisted.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from itertools import islice
from typing import Callable, Generic, Hashable, TypeVar

C = TypeVar("C", bound=Hashable)

SCAN = 32
"""How many of the longest-stalled connections a full table looks at to choose whom to shed."""

SOURCE_SHARE = "source_share"
"""Why a newcomer was refused: its source holds all the slots it may."""

BUSIEST = "busiest_source"
"""Why a newcomer was refused: the table is full and its own source holds the most of it."""


def share_of(capacity: int, fraction: int = 8) -> int:
    """The slots one source may hold in a table of ``capacity``: an eighth of it, at least one."""
    return max(1, capacity // fraction)


@dataclass(frozen=True)
class Verdict(Generic[C]):
    """What became of a newcomer: admitted (making room by shedding ``shed``, if not None) or refused for ``reason``."""

    admitted: bool
    shed: C | None = None
    reason: str | None = None


class Admission(Generic[C]):
    """A table of at most ``capacity`` connections, fair between their sources."""

    def __init__(
        self,
        capacity: int,
        share: int,
        allowance: Callable[[str], int] = lambda source: 0,
        weight: Callable[[str], int] | None = None,
    ) -> None:
        if capacity < 1 or share < 1:
            raise ValueError("a table needs room for at least one connection, and each source for one")
        self.capacity = capacity
        self.share = share
        self._allowance = allowance
        self._weight = weight or self._beyond_allowance
        # Those that may be shed, longest-stalled first: all of them, and each source's.
        self._order: OrderedDict[C, str] = OrderedDict()
        self._by_source: dict[str, OrderedDict[C, None]] = {}
        self._kept: dict[C, str] = {}  # those never to be shed, and their sources
        self._held: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._order) + len(self._kept)

    def __contains__(self, connection: object) -> bool:
        return connection in self._order or connection in self._kept

    def __iter__(self):
        """The connections held now, the kept ones last (a copy: the caller may release them meanwhile)."""
        return iter([*self._order, *self._kept])

    def held_by(self, source: str) -> int:
        """How many slots ``source`` holds now."""
        return self._held.get(source, 0)

    def admit(self, connection: C, source: str) -> Verdict[C]:
        """Give ``connection`` from ``source`` a slot if it may have one; the caller closes what is shed or refused."""
        shed = None
        if self._held.get(source, 0) >= self.share + min(self._allowance(source), self.share):
            shed = self._stalest_of(source)
            if shed is None:
                return Verdict(False, reason=SOURCE_SHARE)
        elif len(self) >= self.capacity:
            shed = self._victim(source)
            if shed is None:
                return Verdict(False, reason=BUSIEST)
        if shed is not None:
            self.release(shed)
        self._order[connection] = source
        self._by_source.setdefault(source, OrderedDict())[connection] = None
        self._held[source] = self._held.get(source, 0) + 1
        return Verdict(True, shed=shed)

    def progressed(self, connection: C) -> None:
        """``connection`` got further (a step of its handshake): it is the last to be shed now."""
        source = self._order.get(connection)
        if source is not None:
            self._order.move_to_end(connection)
            self._by_source[source].move_to_end(connection)

    def stalled(self, connection: C) -> None:
        """``connection`` will get no further (it failed and is closing): it is the first to be shed now."""
        source = self._order.get(connection)
        if source is not None:
            self._order.move_to_end(connection, last=False)
            self._by_source[source].move_to_end(connection, last=False)

    def keep(self, connection: C) -> None:
        """Never shed ``connection``: it holds its slot until released."""
        source = self._unorder(connection)
        if source is not None:
            self._kept[connection] = source

    def release(self, connection: C) -> None:
        """``connection`` no longer holds a slot (it is through, or gone); a no-op if it held none."""
        source = self._unorder(connection) or self._kept.pop(connection, None)
        if source is None:
            return
        held = self._held[source] - 1
        if held:
            self._held[source] = held
        else:
            del self._held[source]  # so that the table holds only the sources connected now

    def _unorder(self, connection: C) -> str | None:
        source = self._order.pop(connection, None)
        if source is not None:
            own = self._by_source[source]
            del own[connection]
            if not own:
                del self._by_source[source]
        return source

    def _stalest_of(self, source: str) -> C | None:
        own = self._by_source.get(source)
        return next(iter(own)) if own else None

    def _beyond_allowance(self, source: str) -> int:
        return self._held.get(source, 0) - min(self._allowance(source), self.share)

    def _victim(self, newcomer: str) -> C | None:
        """The connection to shed for a newcomer from ``newcomer``, if any may be."""
        victim, most, weighed = None, None, {}
        for connection, source in islice(self._order.items(), SCAN):
            weight = weighed.get(source)
            if weight is None:
                weight = weighed[source] = self._weight(source)
            if most is None or weight > most:
                victim, most = connection, weight
        if victim is None or self._weight(newcomer) + 1 > most:
            # The newcomer's source would weigh the most: it displaces its own.
            return self._stalest_of(newcomer)
        return victim
