"""Who gets in: secrets, address rules and limits, with real processes on loopback.

127.0.0.2 and 127.0.0.3 are local addresses on Linux: visitors and raw
control connections bind them as their source to play other hosts.
"""

from __future__ import annotations

import selectors
import socket
import time
from pathlib import Path

from tests.processes import TIMEOUT
from tests.visitors import QUICKLY, assert_echoes, assert_gives_up, start_local


def connect_from(source: str, port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT, source_address=(source, 0))


def refused_without_a_byte(source: str, port: int) -> bool:
    """Whether a connection from ``source`` is closed by the server before it says anything."""
    with connect_from(source, port) as conn:
        try:
            return conn.recv(1) == b""
        except ConnectionResetError:
            return True


def echoes_from(source: str, port: int) -> bool:
    """Whether a visitor from ``source`` gets its bytes echoed (False if it is refused)."""
    with connect_from(source, port) as visitor:
        try:
            visitor.sendall(b"ping")
            visitor.shutdown(socket.SHUT_WR)
            return visitor.recv(100) == b"ping"
        except OSError:  # reset, or not connected any more: refused
            return False


def test_any_of_several_secrets_opens_a_tunnel(processes, echo_service):
    server, control_port = processes.server("--secret", "alpha, beta")
    for secret in ("alpha", "beta"):
        _, public_port = processes.local(echo_service.port, control_port, "--secret", secret)
        assert_echoes(public_port)
    refused = start_local(processes, control_port, "--secret", "gamma")
    assert_gives_up(refused, "server error: invalid secret")
    assert "alpha" not in server.stderr and "beta" not in server.stderr


def test_secrets_from_a_file_stay_out_of_the_process_list(processes, echo_service, tmp_path: Path):
    secrets = tmp_path / "secrets"
    secrets.write_text("# the team's secrets\nfirst-secret\n\nsecond-secret\n")
    server, control_port = processes.server("--secret-file", str(secrets))
    _, public_port = processes.local(echo_service.port, control_port, env={"SPORE_SECRET": "second-secret"})
    assert_echoes(public_port)
    command_line = Path(f"/proc/{server.popen.pid}/cmdline").read_bytes()
    assert b"secret\x00" not in command_line.replace(b"secret-file", b"")
    assert "first-secret" not in server.stderr and "second-secret" not in server.stderr


def test_an_unreadable_secret_file_stops_the_start(processes, tmp_path: Path):
    server = processes.spore("server", "--secret-file", str(tmp_path / "missing"))
    assert server.wait() == 2
    assert f"--secret-file {tmp_path / 'missing'}: No such file or directory" in server.stderr


def test_address_rules_apply_to_control_and_public_ports(processes, echo_service):
    _, control_port = processes.server(
        "--allow", "127.0.0.1 127.0.0.2", "--deny", "127.0.0.0/8", "--secret", "s3cret"
    )
    _, public_port = processes.local(echo_service.port, control_port, "--secret", "s3cret")
    assert echoes_from("127.0.0.2", public_port)
    assert refused_without_a_byte("127.0.0.3", public_port)
    # The control port would send a Challenge first: a refused peer gets nothing.
    assert refused_without_a_byte("127.0.0.3", control_port)
    with connect_from("127.0.0.2", control_port) as allowed:
        assert allowed.recv(1) == b"{"


def test_a_bad_rule_stops_the_start(processes):
    server = processes.spore("server", "--allow", "10.0.0.300")
    assert server.wait() == 2
    assert "--allow: '10.0.0.300' is not an IP address or network" in server.stderr


def test_connections_per_address_are_limited_but_not_by_a_tunnels_own_data(processes, echo_service):
    _, control_port = processes.server("--max-conns-per-ip", "3")
    _, public_port = processes.local(echo_service.port, control_port)
    # Three visitors from one address, each claimed: the client's three data
    # connections (from 127.0.0.1, like its control connection) do not count.
    visitors = [connect_from("127.0.0.2", public_port) for _ in range(3)]
    try:
        for visitor in visitors:
            visitor.sendall(b"held")
            assert visitor.recv(4) == b"held"
        assert refused_without_a_byte("127.0.0.2", public_port)
        assert echoes_from("127.0.0.3", public_port)
    finally:
        visitors.pop().close()
    # A slot is free again once a connection closes (the server hears of it soon after).
    deadline = time.monotonic() + QUICKLY
    while not echoes_from("127.0.0.2", public_port):
        assert time.monotonic() < deadline, "the closed connection's slot never came back"
        time.sleep(0.05)
    for visitor in visitors:
        visitor.close()


def test_one_address_holds_its_share_of_the_handshakes_and_no_more(processes, echo_service):
    server, control_port = processes.server("--max-handshakes", "50")
    _, public_port = processes.local(echo_service.port, control_port)
    flood = [connect_from("127.0.0.3", control_port) for _ in range(300)]
    try:
        # The tunnel keeps working meanwhile.
        assert_echoes(public_port)
        # The address holds its share, an eighth of the 50 slots; the rest are closed at once.
        assert len(closed_within(flood, 2.0)) == 300 - 50 // 8
    finally:
        for conn in flood:
            conn.close()
    # The flood's slots free up as its connections are closed; new clients get in.
    _, public_port = processes.local(echo_service.port, control_port)
    assert_echoes(public_port)
    assert server.popen.poll() is None


def closed_within(connections: list[socket.socket], seconds: float) -> list[socket.socket]:
    """The connections the server closed (EOF or reset) within ``seconds``."""
    closed = []
    with selectors.DefaultSelector() as selector:
        for conn in connections:
            selector.register(conn, selectors.EVENT_READ)
        deadline = time.monotonic() + seconds
        while (remaining := deadline - time.monotonic()) > 0:
            for key, _ in selector.select(remaining):
                try:
                    data = key.fileobj.recv(1)
                except ConnectionResetError:
                    data = b""
                if data == b"":
                    closed.append(key.fileobj)
                selector.unregister(key.fileobj)
    return closed
