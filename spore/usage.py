"""What tunnels have carried: visitors and bytes (no Twisted here)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


class Forwarded(Protocol):
    bytes_in: int  # from the visitor
    bytes_out: int  # to the visitor


@dataclass
class Usage:
    """Visitors forwarded and the bytes they sent and were sent."""

    visitors: int = 0
    bytes_from_visitors: int = 0
    bytes_to_visitors: int = 0

    def add(self, visitor: Forwarded) -> None:
        """Count a forwarded visitor's bytes; its own visit is counted when it is claimed (``visitors``)."""
        self.bytes_from_visitors += visitor.bytes_in
        self.bytes_to_visitors += visitor.bytes_out

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.visitors + other.visitors,
            self.bytes_from_visitors + other.bytes_from_visitors,
            self.bytes_to_visitors + other.bytes_to_visitors,
        )
