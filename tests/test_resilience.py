"""Faults with real processes: servers that die, clients that die, visitors that misbehave."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from tests.processes import TIMEOUT
from tests.visitors import QUICKLY, assert_echoes, closed_port, connect, open_files, wait_until_refused


def test_a_killed_and_restarted_server_gets_the_client_back_on_its_port(processes, echo_service):
    control_port = closed_port()
    listen = ("--listen", f"tcp:{control_port}:interface=127.0.0.1", "--bind-tunnels", "127.0.0.1",
              "--min-port", "20000", "--max-port", "29999")
    server = processes.spore("server", *listen)
    server.wait_for(r"server listening", stream="stderr")
    local, public_port = processes.local(echo_service.port, control_port)
    assert_echoes(public_port)

    server.signal(signal.SIGKILL)
    server.wait()
    restarted = processes.spore("server", *listen)
    restarted.wait_for(r"server listening", stream="stderr")
    local.wait_for(rf"(?s)listening at 127\.0\.0\.1:{public_port}.*listening at 127\.0\.0\.1:{public_port}", timeout=15)
    assert_echoes(public_port)
    assert "tunnel on port" in local.stderr and "reconnecting" in local.stderr
    assert local.popen.poll() is None


def test_a_killed_client_frees_its_port_for_its_next_run(processes, echo_service):
    _, control_port = processes.server()
    local, public_port = processes.local(echo_service.port, control_port)
    local.signal(signal.SIGKILL)
    wait_until_refused(public_port, within=QUICKLY)
    _, again = processes.local(echo_service.port, control_port, "--port", str(public_port))
    assert again == public_port
    assert_echoes(public_port)


def test_a_visitor_that_resets_mid_transfer_costs_nothing(processes, echo_service):
    server, control_port = processes.server()
    _, public_port = processes.local(echo_service.port, control_port)
    before = open_files(server)  # listeners and the control connection
    for _ in range(20):
        with connect(public_port) as visitor:
            visitor.sendall(b"x" * 100_000)
            visitor.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        # closing with a zero linger sends a reset
    assert_echoes(public_port)
    _wait_for(lambda: open_files(server) == before, "the server's descriptors to come back")


def _wait_for(condition, what: str, seconds: float = QUICKLY) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"waited {seconds}s for {what}"
        time.sleep(0.05)


def held_visitor(public_port: int) -> socket.socket:
    """A visitor in the middle of a forwarded exchange."""
    visitor = connect(public_port)
    visitor.sendall(b"first half ")
    assert visitor.recv(11) == b"first half "
    return visitor


def test_a_stopping_server_lets_forwarded_connections_finish(processes, echo_service):
    server, control_port = processes.server("--drain-timeout", "10")
    local, public_port = processes.local(echo_service.port, control_port)
    with held_visitor(public_port) as visitor:
        server.signal(signal.SIGTERM)
        wait_until_refused(public_port, within=QUICKLY)  # no new visitors
        local.wait_for("server is shutting down", stream="stderr")
        visitor.sendall(b"second half")
        assert visitor.recv(11) == b"second half"  # the forwarded one goes on
        assert server.popen.poll() is None
    assert server.wait(QUICKLY) == 0  # and the server ends once it is done


def test_a_forwarded_connection_that_does_not_finish_is_closed_after_the_drain_timeout(processes, echo_service):
    server, control_port = processes.server("--drain-timeout", "1")
    _, public_port = processes.local(echo_service.port, control_port)
    with held_visitor(public_port) as visitor:
        server.signal(signal.SIGTERM)
        started = time.monotonic()
        assert server.wait(QUICKLY) == 0
        assert 0.9 < time.monotonic() - started
        try:
            assert visitor.recv(1) == b""
        except ConnectionResetError:
            pass


def test_a_second_signal_stops_the_server_at_once(processes, echo_service):
    server, control_port = processes.server("--drain-timeout", "60")
    _, public_port = processes.local(echo_service.port, control_port)
    with held_visitor(public_port):
        server.signal(signal.SIGTERM)
        server.wait_for("forwarded connections get 60 s", stream="stderr")
        server.signal(signal.SIGTERM)
        assert server.wait(QUICKLY) == 1
        assert "second signal" in server.stderr


def test_a_short_soak_loses_no_byte_and_leaks_nothing():
    soak = Path(__file__).parent.parent / "bench" / "soak.py"
    run = subprocess.run(
        [sys.executable, str(soak), "--seconds", "6", "--workers", "3", "--restart-every", "2.5"],
        capture_output=True, text=True, timeout=60,
    )
    report = json.loads(run.stdout)
    assert run.returncode == 0 and report["lost_bytes"] == 0, report["exchanges"]
    assert report["bytes_checked"] > 10_000_000
    first, last = report["server_fds_first_last"]
    assert last <= first


def test_thousands_of_unclaimed_visitors_all_expire(processes):
    server, control_port = processes.server("--max-pending-per-tunnel", "2000", "--max-conns-per-ip", "5000")
    with socket.create_connection(("127.0.0.1", control_port), timeout=TIMEOUT) as control:
        control.sendall(b'{"Hello":0}\0')  # a client that never claims anyone
        public_port = int(control.recv(100).split(b"\0")[0][9:-1])
        before = open_files(server)
        visitors = [socket.create_connection(("127.0.0.1", public_port), timeout=TIMEOUT) for _ in range(1000)]
        try:
            _wait_for(lambda: open_files(server) >= before + 1000, "the visitors to be held", 5)
            # Ten seconds after arriving, every one is closed and forgotten.
            _wait_for(lambda: open_files(server) == before, "the visitors to expire", 15)
        finally:
            for visitor in visitors:
                visitor.close()
        server.wait_for(r"removed stale connection", stream="stderr")


def test_clients_hear_that_the_server_is_shutting_down(processes, echo_service):
    server, control_port = processes.server()
    local, _ = processes.local(echo_service.port, control_port)
    server.signal(signal.SIGTERM)
    assert server.wait(QUICKLY) == 0
    local.wait_for(r"server error: server is shutting down; reconnecting", stream="stderr")
    assert "Scheduling retry" not in local.stderr  # ClientService's chatter stays out of the log
