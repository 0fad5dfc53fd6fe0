"""What an operator relies on: a config file, socket buffer sizes, and the commands' start-up checks."""

from __future__ import annotations

import json
import re
import socket
import subprocess

from tests.processes import TIMEOUT


def socket_buffers() -> list[tuple[str, str, int, int]]:
    """(local address, peer address, receive buffer, send buffer) of every established TCP socket."""
    lines = subprocess.run(
        ["ss", "-tmnH", "state", "established"], capture_output=True, text=True, timeout=TIMEOUT, check=True
    ).stdout.splitlines()
    found = []
    for address_line, memory_line in zip(lines[::2], lines[1::2]):
        local, peer = address_line.split()[-2:]
        rb, tb = re.search(r"rb(\d+),t\d+,tb(\d+)", memory_line).groups()
        found.append((local, peer, int(rb), int(tb)))
    return found


def test_buffer_sizes_apply_to_every_socket_that_carries_tunnelled_bytes(processes, echo_service):
    # Linux doubles what is asked for (room for its bookkeeping).
    _, control_port = processes.server("--sndbuf", "50000", "--recbuf", "60000")
    _, public_port = processes.local(echo_service.port, control_port, "--sndbuf", "70000", "--recbuf", "80000")
    with socket.create_connection(("127.0.0.1", public_port), timeout=TIMEOUT) as visitor:
        visitor.sendall(b"hold on")
        assert visitor.recv(7) == b"hold on"
        visitor_address = "127.0.0.1:%d" % visitor.getsockname()[1]
        sockets = socket_buffers()

    def sizes(local, peer):
        return {(rb, tb) for l, p, rb, tb in sockets if re.fullmatch(local, l) and re.fullmatch(peer, p)}

    server_tuned, client_tuned = (120000, 100000), (160000, 140000)
    assert sizes(f"127.0.0.1:{public_port}", visitor_address) == {server_tuned}  # the visitor's, on the server
    on_control_port = sizes(f"127.0.0.1:{control_port}", r".*")  # the control and the data connection
    assert server_tuned in on_control_port and len(on_control_port) == 2
    from_client = sizes(r".*", f"127.0.0.1:{control_port}")
    assert client_tuned in from_client and len(from_client) == 2
    assert sizes(r".*", f"127.0.0.1:{echo_service.port}") == {client_tuned}  # to the local service


def test_logs_can_be_json_lines_with_structured_fields(processes, echo_service):
    server = processes.spore("--log-format", "json", "server", "--listen", "tcp:0:interface=127.0.0.1",
                             "--bind-tunnels", "127.0.0.1", "--min-port", "20000", "--max-port", "29999")
    server.wait_for(r'"log_format": "\{what\} listening on \{address\}"', stream="stderr")
    events = [json.loads(line) for line in server.stderr.splitlines()]
    (listening,) = [e for e in events if e.get("what") == "server"]
    control_port = int(listening["address"].rsplit(":", 1)[1])
    _, public_port = processes.local(echo_service.port, control_port)
    server.wait_for(r"tunnel opened on port", stream="stderr")
    opened = [json.loads(line) for line in server.stderr.splitlines() if "tunnel opened" in line]
    assert opened[0]["port"] == public_port and opened[0]["client"].startswith("127.0.0.1:")
