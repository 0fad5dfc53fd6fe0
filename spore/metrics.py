"""What the server counts, for Prometheus, and the page that shows it.

Each server has a registry of its own (never prometheus_client's global one),
so that tests and several servers in one process do not mix their numbers.
The page is a twisted.web resource: prometheus_client.twisted would import
the global reactor.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Callable

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
from twisted.web.resource import Resource
from twisted.web.server import Site

from spore.usage import Usage

UsageByName = Callable[[], dict[str | None, tuple[int, Usage]]]

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

    def watch_usage(self, usage: UsageByName, names: Callable[[], Iterable[str]]) -> None:
        """Report the bytes forwarded, and each named client's tunnels, visitors and bytes.

        Counted by the server as plain numbers and read at each scrape: a
        Counter's lock on every chunk forwarded costs throughput.  The names
        are those configured (``--clients``), never addresses.
        """
        self.registry.register(_UsageCollector(usage, names))

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


class _UsageCollector(Collector):
    def __init__(self, usage: UsageByName, names: Callable[[], Iterable[str]]) -> None:
        self.usage = usage
        self.names = names

    def collect(self):
        by_name = self.usage()
        total = sum((carried for _, carried in by_name.values()), Usage())
        yield CounterMetricFamily(
            "spore_bytes_proxied", "Payload bytes forwarded between visitors and clients, both directions",
            value=total.bytes_from_visitors + total.bytes_to_visitors,
        )
        tunnels = GaugeMetricFamily("spore_client_tunnels", "Tunnels open now, by client name", labels=["client"])
        visitors = CounterMetricFamily(
            "spore_client_visitors", "Visitors claimed through a client's tunnels, by client name", labels=["client"]
        )
        carried = CounterMetricFamily(
            "spore_client_bytes", "Payload bytes forwarded through a client's tunnels, by client name and direction",
            labels=["client", "direction"],
        )
        for name in sorted({*self.names(), *(name for name in by_name if name is not None)}):
            open_, usage = by_name.get(name, (0, Usage()))
            tunnels.add_metric([name], open_)
            visitors.add_metric([name], usage.visitors)
            carried.add_metric([name, "from_visitors"], usage.bytes_from_visitors)
            carried.add_metric([name, "to_visitors"], usage.bytes_to_visitors)
        yield from (tunnels, visitors, carried)

    def describe(self):
        return []  # described at each collect, so registration does not call collect


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
