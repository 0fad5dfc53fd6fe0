"""What the server counts, for Prometheus, and the page that shows it.

Each server has a registry of its own (never prometheus_client's global one),
so that tests and several servers in one process do not mix their numbers.
The page is a twisted.web resource: prometheus_client.twisted would import
the global reactor.
"""

from __future__ import annotations

from typing import Callable

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from twisted.web.resource import Resource
from twisted.web.server import Site

# Milliseconds from a visitor's arrival to its claim by a client.
_LATENCY_BUCKETS = (1, 2.5, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000)


class ServerMetrics:
    """The counters and gauges of one tunnel server."""

    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        self._children: dict[tuple[Counter, str], Counter] = {}
        self.connections_incoming = Counter(
            "spore_connections_incoming", "Visitors that reached a public port", registry=r
        )
        self.connections_accepted = Counter(
            "spore_connections_accepted", "Visitors claimed by a client", registry=r
        )
        self.connections_stale = Counter(
            "spore_connections_stale", "Visitors closed because no client claimed them in time", registry=r
        )
        self.bytes_proxied = Counter(
            "spore_bytes_proxied", "Payload bytes forwarded between visitors and clients, both directions", registry=r
        )
        self.accept_latency = Histogram(
            "spore_accept_latency_ms", "Milliseconds from a visitor's arrival to its claim",
            buckets=_LATENCY_BUCKETS, registry=r,
        )
        self.auth_failures = Counter(
            "spore_auth_failures", "Control connections that failed the secret's challenge", registry=r
        )
        self.connections_refused = Counter(
            "spore_connections_refused", "Connections closed at once by a limit or an address rule",
            ["reason"], registry=r,
        )
        self.connections_shed = Counter(
            "spore_connections_shed", "Connections admitted, then closed to make room for newcomers",
            ["reason"], registry=r,
        )
        self.tls_handshake_seconds = Counter(
            "spore_tls_handshake_cpu_seconds", "CPU seconds the server spent in TLS handshakes", registry=r
        )
        self.tls_handshakes_delayed = Counter(
            "spore_tls_handshakes_delayed", "TLS handshakes made to wait while handshakes took their share of CPU",
            registry=r,
        )
        self.control_connections = Counter(
            "spore_control_connections", "Control-port connections, by how they ended their handshake",
            ["outcome"], registry=r,
        )

    def watch(
        self, tunnels: Callable[[], float], pending: Callable[[], float], forwarding: Callable[[], float]
    ) -> None:
        """Report gauges whose values the server already holds."""
        r = self.registry
        Gauge("spore_tunnels_active", "Tunnels open now", registry=r).set_function(tunnels)
        Gauge("spore_visitors_pending", "Visitors waiting to be claimed", registry=r).set_function(pending)
        Gauge("spore_connections_active", "Visitors being forwarded now", registry=r).set_function(forwarding)

    def refuse(self, reason: str) -> None:
        """Count one connection refused for ``reason``."""
        self._child(self.connections_refused, reason).inc()

    def shed(self, reason: str) -> None:
        """Count one connection shed for ``reason``."""
        self._child(self.connections_shed, reason).inc()

    def control(self, outcome: str) -> None:
        self._child(self.control_connections, outcome).inc()

    def _child(self, counter: Counter, label: str) -> Counter:
        # labels() costs microseconds, and a flood counts thousands a second.
        key = (counter, label)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = counter.labels(label)
        return child


class MetricsPage(Resource):
    """``GET /metrics`` in Prometheus' text format."""

    isLeaf = True

    def __init__(self, registry: CollectorRegistry) -> None:
        super().__init__()
        self.registry = registry

    def render_GET(self, request) -> bytes:
        request.setHeader(b"Content-Type", CONTENT_TYPE_LATEST.encode())
        return generate_latest(self.registry)


class _QuietSite(Site):
    noisy = False

    def log(self, request) -> None:
        """A scrape every few seconds is not worth a log line."""


def metrics_site(registry: CollectorRegistry) -> Site:
    """A twisted.web Site that serves the registry at /metrics."""
    root = Resource()
    root.putChild(b"metrics", MetricsPage(registry))
    return _QuietSite(root)
