"""What the status page shows, as JSON-ready data (no Twisted here).

The shape of ``/api/tunnels`` (times in UTC, byte counts of payload only)::

    {"server": {"version", "started", "now", "tunnels", "visitors_forwarding", "visitors_pending",
                "visitors_total", "bytes_from_visitors", "bytes_to_visitors"},
     "tunnels": [{"name" (null if its secret has none), "client" ("host:port"), "port", "opened",
                  "open_seconds", "visitors_forwarding", "visitors_pending", "visitors_total",
                  "bytes_from_visitors", "bytes_to_visitors"}, ...]}   # by port

Keys may be added; none will change meaning.
"""

from __future__ import annotations

from datetime import datetime, timezone

from spore import __version__
from spore.usage import Usage


def timestamp(seconds: float) -> str:
    """``seconds`` since the epoch as an ISO 8601 UTC time, to the second."""
    return datetime.fromtimestamp(seconds, timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def report(server, now: float) -> dict:
    """The status of ``server`` (a spore.server.ServerFactory) at ``now``."""
    tunnels = []
    for tunnel in sorted(server.tunnels, key=lambda t: t.port):
        usage = tunnel.usage()
        tunnels.append({
            "name": tunnel.name,
            "client": tunnel.control.client,
            "port": tunnel.port,
            "opened": timestamp(tunnel.opened),
            "open_seconds": round(now - tunnel.opened, 3),
            "visitors_forwarding": len(tunnel.forwarded),
            "visitors_pending": len(tunnel.pending),
            "visitors_total": usage.visitors,
            "bytes_from_visitors": usage.bytes_from_visitors,
            "bytes_to_visitors": usage.bytes_to_visitors,
        })
    total = sum((usage for _, usage in server.usage_by_name().values()), Usage())
    return {
        "server": {
            "version": __version__,
            "started": timestamp(server.started),
            "now": timestamp(now),
            "tunnels": len(server.tunnels),
            "visitors_forwarding": len(server.forwarding),
            "visitors_pending": len(server.pending),
            "visitors_total": total.visitors,
            "bytes_from_visitors": total.bytes_from_visitors,
            "bytes_to_visitors": total.bytes_to_visitors,
        },
        "tunnels": tunnels,
    }
