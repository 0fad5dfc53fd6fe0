"""What an operator relies on: a config file, socket buffer sizes, and the commands' start-up checks."""

from __future__ import annotations

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
