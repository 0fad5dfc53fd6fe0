"""Who gets one of a bounded number of slots, and who gives one up when they run out.

The control port's handshakes and each tunnel's unclaimed visitors are held
in tables like this.  A full table does not turn newcomers away (whoever
filled it would own the door): it sheds a connection to make room, chosen so
that a flood sheds its own.

- Each *source* (see :func:`spore.access.source_key`) holds at most
  ``share`` slots, plus up to as many again that its ``allowance`` says it
  is owed (a tunnel's owner is owed a data connection for each visitor it
  was told of and has not claimed yet).  A newcomer past that is refused.
- When every slot is taken, the newcomer sheds a connection of the source
  that weighs the most (by default: holds the most slots beyond its
  allowance); of that source's connections, the one that has gone longest
  without progress.  Only the
  ``SCAN`` longest-stalled connections are looked at, so that admitting
  costs the same in any flood.  If the newcomer's own source would hold the
  most, the newcomer is refused instead.

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

SCAN = 64
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
        self._order: OrderedDict[C, str] = OrderedDict()  # each connection's source, longest-stalled first
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
        owed = min(self._allowance(source), self.share)
        held = self._held.get(source, 0)
        if held >= self.share + owed:
            return Verdict(False, reason=SOURCE_SHARE)
        shed = None
        if len(self) >= self.capacity:
            shed, heaviest = self._victim()
            if shed is None or self._weight(source) + 1 > heaviest:
                return Verdict(False, reason=BUSIEST)
            self.release(shed)
        self._order[connection] = source
        self._held[source] = held + 1
        return Verdict(True, shed=shed)

    def progressed(self, connection: C) -> None:
        """``connection`` got further (a step of its handshake): it is the last to be shed now."""
        if connection in self._order:
            self._order.move_to_end(connection)

    def keep(self, connection: C) -> None:
        """Never shed ``connection``: it holds its slot until released."""
        source = self._order.pop(connection, None)
        if source is not None:
            self._kept[connection] = source

    def stalled(self, connection: C) -> None:
        """``connection`` will get no further (it failed and is closing): it is the first to be shed now."""
        if connection in self._order:
            self._order.move_to_end(connection, last=False)

    def release(self, connection: C) -> None:
        """``connection`` no longer holds a slot (it is through, or gone); a no-op if it held none."""
        source = self._order.pop(connection, None) or self._kept.pop(connection, None)
        if source is None:
            return
        held = self._held[source] - 1
        if held:
            self._held[source] = held
        else:
            del self._held[source]  # so that the table holds only the sources connected now

    def _beyond_allowance(self, source: str) -> int:
        return self._held.get(source, 0) - min(self._allowance(source), self.share)

    def _victim(self) -> tuple[C, int]:
        """The connection to shed, and its source's weight."""
        victim, most = None, None
        for connection, source in islice(self._order.items(), SCAN):
            weight = self._weight(source)
            if most is None or weight > most:
                victim, most = connection, weight
        return victim, most
