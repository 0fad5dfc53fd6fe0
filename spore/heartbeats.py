"""Every tunnel's heartbeat, from one timer.

bore sends a ``Heartbeat`` frame on each control connection every 500 ms;
Spore's server notices a vanished client by the heartbeats left
unacknowledged (``TCP_USER_TIMEOUT``), so it keeps that cadence.  A timer per
tunnel made thousands of idle tunnels cost several times bore's CPU; one timer
ticks ten times per interval instead, each tick writing the encoded frame to
a tenth of the tunnels.  A tunnel joins the tenth whose turn comes one
interval after its first heartbeat, so each keeps its cadence to within a
tick.
"""

from __future__ import annotations

from typing import Callable, Hashable

from twisted.internet.task import LoopingCall

from spore.messages import Heartbeat, encode

TICKS = 10
"""Ticks of the timer per heartbeat interval."""

FRAME = encode(Heartbeat())


class Heartbeats:
    """Writes ``FRAME`` every ``interval`` seconds with each of the writers it was given."""

    def __init__(self, clock, interval: float) -> None:
        self.clock = clock
        self.interval = interval
        self._groups: list[dict[Hashable, Callable[[bytes], object]]] = [{} for _ in range(TICKS)]
        self._where: dict[Hashable, int] = {}
        self._turn = 0  # the group whose heartbeats were written last
        self._timer: LoopingCall | None = None

    def __len__(self) -> int:
        return len(self._where)

    def add(self, key: Hashable, write: Callable[[bytes], object]) -> None:
        """Write a heartbeat with ``write`` now and every interval until ``remove(key)``."""
        write(FRAME)
        self._groups[self._turn][key] = write
        self._where[key] = self._turn
        if self._timer is None:
            self._timer = LoopingCall.withCount(self._tick)
            self._timer.clock = self.clock
            self._timer.start(self.interval / TICKS, now=False)

    def remove(self, key: Hashable) -> None:
        group = self._where.pop(key, None)
        if group is None:
            return
        del self._groups[group][key]
        if not self._where:  # nothing to beat for: no timer, until the next tunnel
            self._timer.stop()
            self._timer, self._turn = None, 0

    def _tick(self, ticks: int) -> None:
        # A late timer (a busy reactor, a suspended process) counts the ticks
        # it missed: the groups whose turn they were get theirs now.
        for _ in range(min(ticks, TICKS)):
            self._turn = (self._turn + 1) % TICKS
            for write in list(self._groups[self._turn].values()):
                write(FRAME)
