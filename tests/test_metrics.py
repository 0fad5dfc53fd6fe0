"""The server's Prometheus numbers: counted right on fakes, served right for real."""

from __future__ import annotations

import os
import socket
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from spore.messages import Accept, Hello, encode
from spore.metrics import ServerMetrics
from spore.server import ServerFactory
from spore.settings import ServerSettings
from tests.fakes import TunnelReactor, connect
from tests.processes import TIMEOUT
from tests.test_server import announced_ids
from tests.visitors import MiB, assert_gives_up, exchange, start_local


def test_a_visitors_life_is_counted():
    reactor = TunnelReactor()
    server = ServerFactory(ServerSettings(min_port=20000, max_port=20100), reactor)
    value = server.metrics.registry.get_sample_value
    control, control_transport = connect(server)
    control.dataReceived(encode(Hello(20050)))
    assert value("spore_tunnels_active") == 1

    visitor, _ = reactor.visit(20050)
    reactor.visit(20050)
    assert value("spore_connections_incoming_total") == 2 and value("spore_visitors_pending") == 2
    reactor.advance(0.25)
    data, data_transport = connect(server)
    data.dataReceived(encode(Accept(announced_ids(control_transport)[0])) + b"to visitor")
    visitor.dataReceived(b"to client!")
    assert value("spore_connections_accepted_total") == 1
    assert value("spore_accept_latency_ms_count") == 1 and value("spore_accept_latency_ms_sum") == 250
    assert value("spore_accept_latency_ms_bucket", {"le": "250.0"}) == 1
    assert value("spore_accept_latency_ms_bucket", {"le": "100.0"}) == 0
    assert value("spore_bytes_proxied_total") == 20
    assert value("spore_connections_active") == 1

    reactor.advance(10)
    assert value("spore_connections_stale_total") == 1 and value("spore_visitors_pending") == 0
    visitor.connectionLost(None)
    assert value("spore_connections_active") == 0
    control.connectionLost(None)
    assert value("spore_tunnels_active") == 0
    assert value("spore_control_connections_total", {"outcome": "tunnel"}) == 1
    assert value("spore_control_connections_total", {"outcome": "data"}) == 1


def test_each_server_counts_apart():
    first, second = ServerMetrics(), ServerMetrics()
    first.connections_incoming.inc()
    assert second.registry.get_sample_value("spore_connections_incoming_total") == 0


def scrape(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=TIMEOUT) as page:
        assert page.headers["Content-Type"].startswith("text/plain")
        text = page.read().decode()
    return {
        sample.name + "".join(f"{{{k}={v}}}" for k, v in sorted(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_a_real_server_serves_its_numbers_after_real_traffic(processes, echo_service):
    server, control_port = processes.server(
        "--metrics", "tcp:0:interface=127.0.0.1", "--secret", "s3cret", "--deny", "127.0.0.3"
    )
    metrics_port = int(server.wait_for(r"metrics listening on 127\.0\.0\.1:(\d+)", stream="stderr").group(1))
    _, public_port = processes.local(echo_service.port, control_port, "--secret", "s3cret")
    payload = os.urandom(MiB)
    for _ in range(3):
        assert exchange(public_port, payload) == payload
    assert_gives_up(start_local(processes, control_port, "--secret", "wrong"), "invalid secret")
    with socket.create_connection(("127.0.0.1", public_port), timeout=TIMEOUT, source_address=("127.0.0.3", 0)) as s:
        s.recv(1)

    numbers = scrape(metrics_port)
    assert numbers["spore_connections_incoming_total"] == 3
    assert numbers["spore_connections_accepted_total"] == 3
    assert numbers["spore_bytes_proxied_total"] == 2 * 3 * MiB
    assert numbers["spore_accept_latency_ms_count"] == 3 and numbers["spore_accept_latency_ms_sum"] > 0
    assert numbers["spore_tunnels_active"] == 1
    assert numbers["spore_auth_failures_total"] == 1
    assert numbers["spore_connections_refused_total{reason=address}"] == 1
    assert numbers["spore_control_connections_total{outcome=tunnel}"] == 1
    assert numbers["spore_control_connections_total{outcome=data}"] == 3
