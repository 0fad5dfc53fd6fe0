"""Named clients and reserved ports (--clients), with real processes on loopback."""

from __future__ import annotations

import json
import signal
import socket
from pathlib import Path

from spore import auth
from spore.messages import Accept, Authenticate, Connection, Hello, decode_server_message, encode
from tests.processes import TIMEOUT
from tests.visitors import QUICKLY, assert_echoes, assert_gives_up, start_local

SECRETS = {"alice": "alice-secret-1", "bob": "bob-secret-2", "carol": "carol-secret-3"}


def free_ports(count: int) -> int:
    """The first of ``count`` consecutive ports free on 127.0.0.1 now (the OS picks where)."""
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            first = probe.getsockname()[1]
        if first + count > 65536:
            continue
        held = []
        try:
            for port in range(first, first + count):
                s = socket.socket()
                held.append(s)
                s.bind(("127.0.0.1", port))
            return first
        except OSError:
            continue
        finally:
            for s in held:
                s.close()
    raise AssertionError(f"no {count} consecutive free ports found")


def write_clients(path: Path, reserved: dict[str, str], names=SECRETS) -> None:
    path.write_text(json.dumps({
        name: {"secret": secret, **({"ports": [reserved[name]]} if name in reserved else {})}
        for name, secret in names.items()
    }))


def named_server(processes, clients: Path, first: int, last: int):
    return processes.server("--clients", str(clients), "--min-port", str(first), "--max-port", str(last))


def test_a_reserved_port_is_its_owners_alone(processes, echo_service, tmp_path):
    first = free_ports(4)
    clients = tmp_path / "clients.json"
    write_clients(clients, {"alice": f"{first}-{first + 2}"})
    server, control_port = named_server(processes, clients, first, first + 3)

    alice, public_port = processes.local(echo_service.port, control_port, "--secret", SECRETS["alice"],
                                         "--port", str(first + 1))
    assert public_port == first + 1
    assert_echoes(public_port)
    server.wait_for(rf"tunnel opened on port {first + 1} for alice at 127\.0\.0\.1:\d+", stream="stderr")

    bob = start_local(processes, control_port, "--secret", SECRETS["bob"], "--port", str(first))
    assert_gives_up(bob, r"(?m)^Error: server error: port reserved for another client$")
    assert "reconnecting" not in bob.stderr

    # A random port is never a reserved one, not even for their owner.
    for name in ("bob", "alice"):
        _, random_port = processes.local(echo_service.port, control_port, "--secret", SECRETS[name])
        assert random_port == first + 3
        processes.running[-1].stop()
    for secret in SECRETS.values():
        assert secret not in server.stderr


def read_frame(conn: socket.socket) -> bytes:
    frame = b""
    while not frame.endswith(b"\0"):
        byte = conn.recv(1)
        assert byte, f"closed after {frame!r}"
        frame += byte
    return frame[:-1]


def authenticated(control_port: int, secret: str) -> socket.socket:
    """A raw control connection that has answered the server's challenge with ``secret``."""
    conn = socket.create_connection(("127.0.0.1", control_port), timeout=TIMEOUT)
    challenge = decode_server_message(read_frame(conn))
    conn.sendall(encode(Authenticate(auth.answer(secret, challenge.id))))
    return conn


def test_a_data_connection_under_another_name_cannot_claim_a_visitor(processes, tmp_path):
    first = free_ports(1)
    clients = tmp_path / "clients.json"
    write_clients(clients, {})
    server, control_port = named_server(processes, clients, first, first)
    alice = authenticated(control_port, SECRETS["alice"])
    alice.sendall(encode(Hello(first)))
    read_frame(alice)
    with alice, socket.create_connection(("127.0.0.1", first), timeout=TIMEOUT) as visitor:
        visitor.sendall(b"for alice only")
        while not isinstance(announced := decode_server_message(read_frame(alice)), Connection):
            pass
        with authenticated(control_port, SECRETS["bob"]) as bob:
            bob.sendall(encode(Accept(announced.id)))
            assert bob.recv(100) == b""  # closed without a word, as for an unknown id
        server.wait_for(rf"refused to hand visitor {announced.id} to bob at 127\.0\.0\.1:\d+: it belongs to "
                        "another client's tunnel", stream="stderr")
        with authenticated(control_port, SECRETS["alice"]) as data:
            data.sendall(encode(Accept(announced.id)))
            assert data.recv(100) == b"for alice only"


def test_a_reload_changes_who_may_hold_what(processes, echo_service, tmp_path):
    first = free_ports(2)
    clients = tmp_path / "clients.json"
    write_clients(clients, {"alice": str(first)})
    server, control_port = named_server(processes, clients, first, first + 1)
    carol, _ = processes.local(echo_service.port, control_port, "--secret", SECRETS["carol"], "--port", str(first + 1))

    refused = start_local(processes, control_port, "--secret", SECRETS["bob"], "--port", str(first))
    assert_gives_up(refused, "server error: port reserved for another client")

    # The port goes to bob; carol's secret is removed.
    write_clients(clients, {"bob": str(first)}, {"alice": SECRETS["alice"], "bob": SECRETS["bob"]})
    server.signal(signal.SIGHUP)
    server.wait_for("reloaded: 2 secrets accepted, 2 of them named, 1 ports reserved", stream="stderr")
    server.wait_for(
        rf"closing tunnel on port {first + 1} for carol at 127\.0\.0\.1:\d+: its secret is no longer accepted",
        stream="stderr",
    )
    assert carol.wait(QUICKLY) == 1 and "server error: secret no longer accepted" in carol.stderr

    bob, public_port = processes.local(
        echo_service.port, control_port, "--secret", SECRETS["bob"], "--port", str(first)
    )
    assert public_port == first
    assert_echoes(public_port)
    alice = start_local(processes, control_port, "--secret", SECRETS["alice"], "--port", str(first))
    assert_gives_up(alice, "server error: port reserved for another client")


def test_a_reload_of_a_broken_file_keeps_what_was_in_use(processes, echo_service, tmp_path):
    first = free_ports(1)
    clients = tmp_path / "clients.json"
    write_clients(clients, {})
    server, control_port = named_server(processes, clients, first, first)
    _, public_port = processes.local(echo_service.port, control_port, "--secret", SECRETS["alice"])
    clients.write_text('{"alice": {"secret": ')
    server.signal(signal.SIGHUP)
    server.wait_for(rf"reload failed, the secrets and clients in use stay: --clients {clients} line 1 column 22",
                    stream="stderr")
    assert_echoes(public_port)


def test_a_bad_clients_file_stops_the_start(processes, tmp_path):
    clients = tmp_path / "clients.json"
    write_clients(clients, {"alice": "8080"})
    server = processes.spore("server", "--clients", str(clients), "--min-port", "20000", "--max-port", "29999")
    assert server.wait() == 2
    assert (
        f"Error: --clients {clients}: alice's ports 8080 are outside the public ports, "
        "--min-port 20000 to --max-port 29999"
    ) in server.stderr

    clients.write_text(json.dumps({"alice": {"secret": "same"}, "bob": {"secret": "same"}}))
    server = processes.spore("server", "--clients", str(clients))
    assert server.wait() == 2
    assert f"Error: --clients {clients}: bob's secret is alice's too: one secret, one name" in server.stderr
