"""Public ports set aside for named clients (no Twisted here).

A reservation gives a client's name the ports it alone may open; ``Hello(0)``
never hands them to anyone, not even to their owner (who asks for them by
number).
"""

from __future__ import annotations

import bisect
import random
from collections.abc import Iterable, Mapping

PortRange = tuple[int, int]  # first and last port, both included


class Reservations:
    """Which named client, if any, a public port is kept for."""

    def __init__(self, ranges: Mapping[str, Iterable[PortRange]] = {}) -> None:
        spans = sorted((first, last, name) for name, held in ranges.items() for first, last in held)
        for (_, last, name), (first, _, other) in zip(spans, spans[1:]):
            if first <= last:
                owners = f"twice for {name}" if name == other else f"for both {name} and {other}"
                raise ValueError(f"port {first} is reserved {owners}")
        self._spans = spans
        self._starts = [first for first, _, _ in spans]
        self._free: dict[PortRange, tuple[list[PortRange], int]] = {}

    def __bool__(self) -> bool:
        return bool(self._spans)

    def owner(self, port: int) -> str | None:
        """The name ``port`` is reserved for, or None."""
        i = bisect.bisect_right(self._starts, port) - 1
        if i >= 0:
            first, last, name = self._spans[i]
            if first <= port <= last:
                return name
        return None

    def held_by(self, name: str) -> list[PortRange]:
        return [(first, last) for first, last, owner in self._spans if owner == name]

    def pick_free(self, rng: random.Random, lowest: int, highest: int) -> int | None:
        """A port from ``lowest`` to ``highest`` that no one holds a reservation for, each equally likely."""
        gaps, count = self._gaps(lowest, highest)
        if not count:
            return None
        # A draw over the whole span when nothing is reserved, as bore's own.
        k = rng.randint(lowest, lowest + count - 1) - lowest
        for first, last in gaps:
            if k <= last - first:
                return first + k
            k -= last - first + 1
        raise AssertionError("unreachable")

    def _gaps(self, lowest: int, highest: int) -> tuple[list[PortRange], int]:
        key = (lowest, highest)
        if key not in self._free:
            gaps, start = [], lowest
            for first, last, _ in self._spans:
                if first > start:
                    gaps.append((start, min(first - 1, highest)))
                start = max(start, last + 1)
                if start > highest:
                    break
            if start <= highest:
                gaps.append((start, highest))
            gaps = [(first, last) for first, last in gaps if first <= last]
            self._free[key] = gaps, sum(last - first + 1 for first, last in gaps)
        return self._free[key]


def parse_ports(value: object) -> PortRange:
    """A reservation's port or range, given as ``20345``, ``"20345"`` or ``"21000-21009"``."""
    if isinstance(value, int) and not isinstance(value, bool):
        first = last = value
    elif isinstance(value, str):
        text = value.strip()
        low, dash, high = text.partition("-")
        try:
            first = int(low)
            last = int(high) if dash else first
        except ValueError:
            raise ValueError(f"{value!r} is not a port or a range of ports like 21000-21009") from None
    else:
        raise ValueError(f"{value!r} is not a port or a range of ports like 21000-21009")
    if not 1 <= first <= last <= 65535:
        raise ValueError(f"{value!r} is not a port or a range of ports from 1 to 65535, lowest first")
    return first, last
