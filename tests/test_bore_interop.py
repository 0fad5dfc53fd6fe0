"""Spore against a real bore, when one is at hand.

bore listens on, and dials, its fixed control port 7835, so these tests need
that port free on 127.0.0.1; run them in a private network namespace:

    SPORE_TEST_BORE=/path/to/bore unshare -n sh -c 'ip link set lo up; python -m pytest tests/test_bore_interop.py'

Without ``SPORE_TEST_BORE`` they are skipped (``test_stock_bore.py`` runs
them so against each bore it finds), and the captured bore sessions of
``test_conformance.py`` stand in for a bore.

What differs between bore versions, each expected of its own: 0.5 has no
``--bind-addr`` (its server listens on every address), and it closes both
directions of a forwarded connection when either side's FIN arrives; 0.6
passes the FIN on and keeps the other direction flowing, as Spore does.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.processes import TIMEOUT, Process
from tests.services import reply_after_eof, reply_to
from tests.visitors import assert_gives_up, connect, exchange, fingerprint

BORE = os.environ.get("SPORE_TEST_BORE", "")
BORE_CONTROL_PORT = 7835
SECRET = "interop secret"


def _version() -> tuple[int, ...]:
    """The bore's version, from ``bore --version`` ("bore-cli 0.5.2")."""
    if not BORE:
        return ()
    answer = subprocess.run([BORE, "--version"], capture_output=True, text=True, timeout=10).stdout
    return tuple(int(n) for n in re.search(r"(\d+)\.(\d+)\.(\d+)", answer).groups())


VERSION = _version()
PASSES_HALF_CLOSE = VERSION >= (0, 6)
HAS_BIND_ADDR = VERSION >= (0, 6)


def _control_port_is_free() -> bool:
    with socket.socket() as probe:
        # As bore's own listener does: a previous run's connections still in
        # TIME_WAIT do not make the port taken.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", BORE_CONTROL_PORT))
        except OSError:
            return False
    return True


pytestmark = [
    pytest.mark.skipif(not BORE, reason="set SPORE_TEST_BORE to a bore executable"),
    pytest.mark.skipif(bool(BORE) and not _control_port_is_free(), reason="port 7835 is taken"),
]


def spore_server(processes, *args: str) -> Process:
    process = processes.spore("server", "--bind-addr", "127.0.0.1", *args)
    process.wait_for(r"server listening on 127\.0\.0\.1:7835", stream="stderr")
    return process


def bore_server(processes, *args: str) -> Process:
    bind = ("--bind-addr", "127.0.0.1") if HAS_BIND_ADDR else ()
    process = processes.start(BORE, "server", *bind, *args, env={"NO_COLOR": "1"})
    process.wait_for("server listening")
    return process


def spore_client(processes, local_port: int, *args: str) -> Process:
    return processes.spore("local", str(local_port), "--to", "127.0.0.1", "-l", "127.0.0.1", *args)


def bore_client(processes, local_port: int, *args: str) -> Process:
    return processes.start(
        BORE, "local", str(local_port), "--to", "127.0.0.1", "-l", "127.0.0.1", *args, env={"NO_COLOR": "1"}
    )


def public_port(client: Process) -> int:
    return int(client.wait_for(r"listening at 127\.0\.0\.1:(\d+)").group(1))


PAIRS = {
    "bore client, spore server": (bore_client, spore_server),
    "spore client, bore server": (spore_client, bore_server),
}


@pytest.fixture(params=PAIRS, ids=list(PAIRS))
def pair(request):
    return PAIRS[request.param]


def echoed_in_full(port: int, data: bytes) -> bytes:
    """Send ``data`` and read as many bytes back, then close: no half-close involved."""
    with connect(port) as visitor, ThreadPoolExecutor(1) as sender:
        sent = sender.submit(visitor.sendall, data)
        received = bytearray()
        while len(received) < len(data) and (chunk := visitor.recv(1 << 20)):
            received += chunk
        sent.result(TIMEOUT)
    return bytes(received)


def test_bytes_cross_both_ways_and_a_half_close_is_passed_on(pair, processes, echo_service, start_service):
    client, server = pair
    server(processes, "--secret", SECRET)
    echo_port = public_port(client(processes, echo_service.port, "--secret", SECRET))
    data = os.urandom(3 << 20)
    # Read the whole echo before the FIN: bore 0.5 would cut what is still in flight.
    assert fingerprint(echoed_in_full(echo_port, data)) == fingerprint(data)

    # The service replies only after the visitor's FIN has reached it.
    replier = start_service(reply_after_eof)
    reply_port = public_port(client(processes, replier.port, "--secret", SECRET))
    request = os.urandom(100_000)
    if PASSES_HALF_CLOSE:
        assert fingerprint(exchange(reply_port, request)) == fingerprint(reply_to(request))
    else:
        # bore 0.5 closes both directions at the FIN: the reply never comes.
        assert exchange(reply_port, request) == b""


def test_a_wrong_secret_is_refused_in_bores_words(pair, processes):
    client, server = pair
    server(processes, "--secret", SECRET)
    assert_gives_up(client(processes, 1, "--secret", "not it"), r"(?m)^Error: server error: invalid secret$")


def test_a_missing_secret_is_refused_in_bores_words(pair, processes):
    client, server = pair
    server(processes, "--secret", SECRET)
    assert_gives_up(
        client(processes, 1), r"(?m)^Error: server requires authentication, but no client secret was provided$"
    )


def test_a_bore_client_with_a_named_secret_gets_its_port_and_no_other(processes, echo_service, tmp_path):
    clients = tmp_path / "clients.json"
    clients.write_text(
        '{"alice": {"secret": "alice interop", "ports": [20007]}, "bob": {"secret": "bob interop"}}'
    )
    server = spore_server(processes, "--clients", str(clients), "--min-port", "20000", "--max-port", "20009")
    alice = bore_client(processes, echo_service.port, "--secret", "alice interop", "--port", "20007")
    assert public_port(alice) == 20007
    assert echoed_in_full(20007, b"through alice's tunnel") == b"through alice's tunnel"
    server.wait_for(r"tunnel opened on port 20007 for alice at 127\.0\.0\.1:\d+", stream="stderr")

    bob = bore_client(processes, 1, "--secret", "bob interop", "--port", "20007")
    assert_gives_up(bob, r"(?m)^Error: server error: port reserved for another client$")
