"""Floods, as an attacker would send them, against a real server: nobody else is locked out.

Each flood holds its connections from one address or from 250 (127.0.0.2 and
up) and reopens each as soon as the server closes it, for a few seconds at
most (tests/flood.py).
"""

from __future__ import annotations

import re
import ssl
import sys
import time
import urllib.request

import pytest

from spore.accepting import ACCEPTS_PER_TURN
from spore.handshake_budget import SHARE
from spore.settings import ServerSettings
from spore.shedding import LOUD
from tests.flood import ConnectionFlood, client_hello, sources, time_to_tunnel
from tests.processes import TIMEOUT
from tests.relay import SlowLink
from tests.services import echo, echo_until_idle
from tests.visitors import MiB, assert_echoes, exchange, memory, open_files

SECRET = "s3cret"

MAX_HANDSHAKES = ServerSettings.max_handshakes  # the default the tests' servers run with

IN_TIME = 2.0
"""Seconds a good client may take to open its tunnel during a flood."""

FLOODER = re.compile(r"127\.0\.(0\.(?!1\b)|1\.)\d+")
"""An address of the flood's (127.0.0.2 and up) in a log line."""

SILENT, MID_FRAME = b"", b'{"Authenticate":"'


def secret_args(secret: str | None) -> tuple[str, ...]:
    return ("--secret", secret) if secret else ()


def assert_opens_in_time(control_port: int, secret: str | None, times: int = 5, **kwargs) -> None:
    """A bore client's handshake, ``times`` over, each done within IN_TIME."""
    for _ in range(times):
        took = time_to_tunnel(control_port, secret, **kwargs)
        assert took < IN_TIME, f"the tunnel took {took:.2f} s to open"


def wait_for_flood(flood: ConnectionFlood, closed: int, within: float = 5.0, or_open: int | None = None) -> None:
    """Wait until the server has closed ``closed`` of the flood's connections (it is at work shedding).

    Or, given ``or_open``, until that many of them are open at once.
    """
    deadline = time.monotonic() + within
    while flood.stats.closed_by_server < closed and (or_open is None or flood.stats.open_now < or_open):
        assert time.monotonic() < deadline, f"the flood never got going: {flood.stats}"
        time.sleep(0.05)


@pytest.mark.parametrize("secret", [None, SECRET], ids=["open", "secret"])
def test_one_address_holding_1500_connections_does_not_keep_a_client_out(processes, echo_service, secret):
    _, control_port = processes.server(*secret_args(secret))
    with ConnectionFlood(control_port, ["127.0.0.2"], 1500) as flood:
        # It holds an eighth of the 1024 slots; the rest of its connections are closed at once.
        wait_for_flood(flood, 1500 - 128)
        assert_opens_in_time(control_port, secret)
        _, public_port = processes.local(echo_service.port, control_port, *secret_args(secret))
        assert_echoes(public_port)


@pytest.mark.parametrize("shape", [SILENT, MID_FRAME], ids=["silent", "mid-frame"])
@pytest.mark.parametrize("secret", [None, SECRET], ids=["open", "secret"])
def test_250_addresses_refreshing_their_connections_do_not_keep_anyone_out(processes, echo_service, secret, shape):
    server, control_port = processes.server(*secret_args(secret))
    _, existing_port = processes.local(echo_service.port, control_port, *secret_args(secret))
    before, files_before = memory(server, "VmRSS"), open_files(server)
    lines_before = len(server.stderr.splitlines())
    with ConnectionFlood(control_port, sources(250), 8, payload=shape) as flood:
        wait_for_flood(flood, 3000)
        # A new client gets in, and so do the existing tunnel's data connections.
        assert_opens_in_time(control_port, secret)
        _, public_port = processes.local(echo_service.port, control_port, *secret_args(secret))
        for _ in range(5):
            assert_echoes(public_port)
            assert_echoes(existing_port)
        during, files = memory(server, "VmRSS"), open_files(server)
        stats = flood.stop()
    # Sockets: the handshake slots, and those being closed this turn of the reactor.
    assert files - files_before <= MAX_HANDSHAKES + 2 * ACCEPTS_PER_TURN, files - files_before
    # Memory: what a full table costs, and most of it back once the flood is gone.
    server.wait_for(r"turned away \d+ connections", stream="stderr")
    after = memory(server, "VmRSS")
    print(f"server RSS: {before / MiB:.1f} MiB before, {during / MiB:.1f} during, {after / MiB:.1f} after")
    assert during - before < 16 * MiB and after - before < 8 * MiB
    # Summed up, not a line per connection turned away.
    assert stats.closed_by_server > 3000
    flood_lines = [line for line in server.stderr.splitlines()[lines_before:] if FLOODER.search(line)]
    assert len(flood_lines) <= 4 * LOUD, "\n".join(flood_lines)
    assert_echoes(existing_port)


def test_a_client_over_a_slow_link_with_tls_and_a_secret_gets_in_during_a_flood(processes, echo_service, pki):
    certfile, keyfile = pki.server
    server, control_port = processes.server("--tls", "--certfile", certfile, "--keyfile", keyfile, *secret_args(SECRET))
    link = SlowLink(control_port, rtt=0.1)
    tls = ssl.create_default_context(cafile=pki.ca)
    try:
        with ConnectionFlood(control_port, sources(250), 8) as flood:
            wait_for_flood(flood, 3000)
            # TCP, TLS and the challenge: three round trips, well within the time.
            assert_opens_in_time(link.port, SECRET, tls=tls)
            _, public_port = processes.local(
                echo_service.port, link.port, "--tls", "--cacertfile", pki.ca, *secret_args(SECRET)
            )
            for _ in range(5):
                assert_echoes(public_port)
    finally:
        link.close()


def test_tls_handshakes_replayed_by_a_flood_take_at_most_their_share_of_the_servers_time(processes, pki):
    # An RSA key makes each handshake cost what it does on many real servers:
    # unbounded, this flood keeps the server in handshakes 0.8 of the time.
    certfile, keyfile = pki.rsa_server
    server, control_port = processes.server(
        "--tls", "--certfile", certfile, "--keyfile", keyfile, *secret_args(SECRET),
        "--metrics", "tcp:0:interface=127.0.0.1",
    )
    metrics_port = int(server.wait_for(r"metrics listening on 127\.0\.0\.1:(\d+)", stream="stderr").group(1))
    tls = ssl.create_default_context(cafile=pki.ca)
    # Each connection sends a ClientHello, and once answered, comes back to send it again.
    with ConnectionFlood(control_port, sources(250), 4, payload=client_hello(), again_on_reply=True) as flood:
        wait_for_flood(flood, 0)
        started, spent = time.monotonic(), metric(metrics_port, "spore_tls_handshake_cpu_seconds_total")
        assert_opens_in_time(control_port, SECRET, times=3, tls=tls)
        time.sleep(1)
        share = (metric(metrics_port, "spore_tls_handshake_cpu_seconds_total") - spent) / (time.monotonic() - started)
        assert flood.stats.replies > 100
    assert metric(metrics_port, "spore_tls_handshakes_delayed_total") > 0
    assert 0 < share <= SHARE + 0.1, share


def metric(metrics_port: int, name: str) -> float:
    """A figure the server's metrics page shows."""
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=TIMEOUT) as page:
        text = page.read().decode()
    return float(re.search(rf"^{name} (\S+)$", text, re.MULTILINE).group(1))


def two_tunnels(processes, start_service, control_port: int, flooded=echo) -> tuple[int, int]:
    """The public ports of two tunnels through the server, the first to a ``flooded`` service, the other to an echo."""
    return tuple(processes.local(start_service(handler).port, control_port)[1] for handler in (flooded, echo))


@pytest.mark.parametrize("service", [echo, echo_until_idle], ids=["held", "dropped-when-idle"])
def test_a_visitor_flood_on_one_tunnel_leaves_its_real_visitors_and_other_tunnels_served(
    processes, start_service, service
):
    _, control_port = processes.server()
    flooded_port, other_port = two_tunnels(processes, start_service, control_port, flooded=service)
    with ConnectionFlood(flooded_port, sources(250), 4) as flood:
        # A client that keeps up claims every visitor a holding service keeps,
        # leaving the server none to shed: then the flood is at full strength
        # once all 1,000 are open.
        wait_for_flood(flood, 300, or_open=1000)
        for _ in range(5):
            assert exchange(flooded_port, b"a real visitor") == b"a real visitor"
            assert exchange(other_port, b"next door") == b"next door"


def test_visitors_held_open_on_one_tunnel_cannot_take_the_open_files_another_needs(processes, start_service):
    # A server allowed 600 open files: 1,000 held visitors would need 2,000.
    server = processes.start(
        sys.executable, "-c",
        "import resource, sys; resource.setrlimit(resource.RLIMIT_NOFILE, (600, 600)); "
        "from spore.cli import main; main(sys.argv[1:])",
        "server", "--listen", "tcp:0:interface=127.0.0.1", "--bind-tunnels", "127.0.0.1", "--max-handshakes", "64",
    )
    control_port = int(server.wait_for(r"server listening on 127\.0\.0\.1:(\d+)", stream="stderr").group(1))
    flooded_port, other_port = two_tunnels(processes, start_service, control_port)
    with ConnectionFlood(flooded_port, sources(250), 4) as flood:
        wait_for_flood(flood, 300)
        for _ in range(5):
            assert exchange(other_port, b"next door") == b"next door"
    assert "EMFILE" not in server.stderr and "Too many open files" not in server.stderr
