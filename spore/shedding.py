"""What the server turned away, and why: in the metrics at once, in the log without flooding it.

A flood is thousands of connections a second: a log line for each would
flood the log too.  So a refused or shed connection is counted (for
Prometheus) and never logged on its own; a handshake that fails (timed out,
a bad frame, a wrong secret) or a visitor nobody claimed is logged on its
own only for the first ``LOUD`` of its kind in each ``SUMMARY_EVERY`` seconds.  What was not logged
on its own is summed up in one line at the end of those seconds.
"""

from __future__ import annotations

from collections import Counter
from typing import Callable

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from spore.metrics import ServerMetrics

SUMMARY_EVERY = 5.0
"""Seconds between two summary lines while connections are being turned away."""

LOUD = 5
"""Failed handshakes of each kind logged one by one in each summary period; the rest are only counted."""

# What each reason means, for the summary line; every reason counted is one of these.
REASONS = {
    # Refused at once, before a byte is read or written.
    "address": "refused by the address rules",
    "per_ip_limit": "refused over --max-conns-per-ip",
    "source_share": "refused over their source's share of the slots",
    "busiest_source": "refused from the source holding the most slots when all were taken",
    "tunnel_share": "visitors refused: their tunnel held more than its share of the open files",
    # Admitted, then closed to make room for a newcomer.
    "stalled_handshake": "handshakes shed for making no progress while all slots were taken",
    "oldest_visitor": "unclaimed visitors shed (the oldest of the busiest source) from a full tunnel",
    # Handshakes that failed.
    "timeout": "handshakes timed out",
    "protocol_error": "handshakes ended by a bad frame",
    "auth_failed": "handshakes with a wrong or missing secret",
    "stale_visitor": "visitors no client claimed within 10 s",
}


class TurnedAway:
    """Counts connections refused, shed or failed, by reason, and sums them up in the log every few seconds."""

    log = Logger()

    def __init__(self, clock: IReactorTime, metrics: ServerMetrics) -> None:
        self.clock = clock
        self.metrics = metrics
        self._quiet: Counter[tuple[str, str]] = Counter()  # (where, reason): not logged one by one
        self._loud: Counter[str] = Counter()  # reason: logged one by one in this period
        self._summary: IDelayedCall | None = None

    def refused(self, reason: str, where: str) -> None:
        """A connection to ``where`` (the control port, a public port) closed at once for ``reason``."""
        self.metrics.refuse(reason)
        self._count(where, reason)

    def shed(self, reason: str, where: str) -> None:
        """A connection to ``where`` closed for ``reason`` to make room for a newcomer."""
        self.metrics.shed(reason)
        self._count(where, reason)

    def failed(self, reason: str, where: str, say: Callable[[], object]) -> None:
        """A handshake failed for ``reason``: ``say()`` logs it, unless ``LOUD`` such were logged lately."""
        if self._loud[reason] < LOUD:
            self._loud[reason] += 1
            say()
            self._schedule()
        else:
            self._count(where, reason)

    def _count(self, where: str, reason: str) -> None:
        self._quiet[where, reason] += 1
        self._schedule()

    def _schedule(self) -> None:
        # No timer while nothing happens: an idle server stays idle.
        if self._summary is None:
            self._summary = self.clock.callLater(SUMMARY_EVERY, self.summarize)

    def summarize(self) -> None:
        """Log what was counted and not logged since the last summary, if anything."""
        self._summary = None
        quiet, self._quiet = self._quiet, Counter()
        self._loud.clear()
        if not quiet:
            return
        why = "; ".join(f"{n} {REASONS[reason]} ({where})" for (where, reason), n in quiet.most_common())
        self.log.warn(
            "turned away {total} connections in {seconds:g} s: {why}",
            total=sum(quiet.values()), seconds=SUMMARY_EVERY, why=why,
            counts={f"{where}/{reason}": n for (where, reason), n in quiet.items()},
        )

    def stop(self) -> None:
        """Log what is left to tell, and cancel the next summary."""
        if self._summary is not None:
            self._summary.cancel()
            self.summarize()
