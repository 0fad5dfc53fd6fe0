"""What the server turned away or shed, and why: in the metrics at once, in the log as a summary.

A flood is thousands of connections a second: a log line for each would
flood the log too.  So each is counted at once (for Prometheus) and the log
gets one line every few seconds while it lasts, with the counts by reason.
"""

from __future__ import annotations

from collections import Counter

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from spore.metrics import ServerMetrics

SUMMARY_EVERY = 5.0
"""Seconds between two summary lines while connections are being turned away."""

# What each reason means, for the summary line; every reason counted is one of these.
REASONS = {
    # Refused at once, before a byte is read or written.
    "address": "refused by the address rules",
    "per_ip_limit": "over --max-conns-per-ip",
    "source_share": "over their source's share of the slots",
    "busiest_source": "from the source holding the most slots when all were taken",
    # Admitted, then closed to make room for a newcomer.
    "stalled_handshake": "handshakes shed for making no progress while all slots were taken",
    "oldest_visitor": "unclaimed visitors shed (the oldest of the busiest source) from a full tunnel",
}
SHED = {"stalled_handshake", "oldest_visitor"}


class TurnedAway:
    """Counts connections refused or shed, by reason, and says so in the log every ``SUMMARY_EVERY`` seconds."""

    log = Logger()

    def __init__(self, clock: IReactorTime, metrics: ServerMetrics) -> None:
        self.clock = clock
        self.metrics = metrics
        self.counts: Counter[tuple[str, str]] = Counter()  # (where, reason)
        self._summary: IDelayedCall | None = None

    def count(self, reason: str, where: str) -> None:
        """One connection turned away for ``reason`` at ``where`` (the control port, a public port)."""
        if reason in SHED:
            self.metrics.shed(reason)
        else:
            self.metrics.refuse(reason)
        self.counts[where, reason] += 1
        # No timer while nothing happens: idle servers stay idle.
        if self._summary is None:
            self._summary = self.clock.callLater(SUMMARY_EVERY, self.summarize)

    def summarize(self) -> None:
        """Log what was turned away since the last summary, if anything."""
        self._summary = None
        counts, self.counts = self.counts, Counter()
        if not counts:
            return
        why = "; ".join(f"{n} {REASONS[reason]} ({where})" for (where, reason), n in counts.most_common())
        self.log.warn(
            "turned away {total} connections in {seconds:g} s: {why}",
            total=sum(counts.values()), seconds=SUMMARY_EVERY, why=why,
            counts={f"{where}/{reason}": n for (where, reason), n in counts.items()},
        )

    def stop(self) -> None:
        """Log what is left to tell, and cancel the next summary."""
        if self._summary is not None:
            self._summary.cancel()
            self.summarize()
