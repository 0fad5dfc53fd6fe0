"""Spore against a real bore, when one is at hand.

bore listens on, and dials, its fixed control port 7835, so these tests need
that port free on 127.0.0.1; run them in a private network namespace:

    SPORE_TEST_BORE=/path/to/bore unshare -n sh -c 'ip link set lo up; python -m pytest tests/test_bore_interop.py'

Without ``SPORE_TEST_BORE`` they are skipped: CI has no bore, and the captured
bore sessions of ``test_conformance.py`` stand in for it there.
"""

from __future__ import annotations

import os
import socket

import pytest

from tests.processes import Process
from tests.services import reply_after_eof, reply_to
from tests.visitors import assert_gives_up, exchange, fingerprint

BORE = os.environ.get("SPORE_TEST_BORE", "")
BORE_CONTROL_PORT = 7835
SECRET = "interop secret"


def _control_port_is_free() -> bool:
    with socket.socket() as probe:
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
    process = processes.start(BORE, "server", "--bind-addr", "127.0.0.1", *args, env={"NO_COLOR": "1"})
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


def test_bytes_cross_both_ways_and_a_half_close_is_passed_on(pair, processes, echo_service, start_service):
    client, server = pair
    server(processes, "--secret", SECRET)
    echo_port = public_port(client(processes, echo_service.port, "--secret", SECRET))
    data = os.urandom(3 << 20)
    assert fingerprint(exchange(echo_port, data)) == fingerprint(data)

    # The service replies only after the visitor's FIN has reached it.
    replier = start_service(reply_after_eof)
    reply_port = public_port(client(processes, replier.port, "--secret", SECRET))
    request = os.urandom(100_000)
    assert fingerprint(exchange(reply_port, request)) == fingerprint(reply_to(request))


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
