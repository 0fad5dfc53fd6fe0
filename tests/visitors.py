"""What a visitor does and sees, for tests with real processes on loopback."""

from __future__ import annotations

import hashlib
import re
import socket
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tests.processes import TIMEOUT, Process

MiB = 1 << 20

QUICKLY = 5.0
"""Seconds within which a client that cannot go on must have exited."""


def connect(port: int, receive_buffer: int | None = None) -> socket.socket:
    """A visitor connected to 127.0.0.1:``port``; every operation on it times out."""
    visitor = socket.socket()
    try:
        visitor.settimeout(TIMEOUT)
        if receive_buffer is not None:
            visitor.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        visitor.connect(("127.0.0.1", port))
    except BaseException:
        visitor.close()
        raise
    return visitor


def receive_all(visitor: socket.socket) -> bytes:
    """Everything the visitor receives until EOF."""
    chunks = []
    while chunk := visitor.recv(MiB):
        chunks.append(chunk)
    return b"".join(chunks)


def _send_then_shut(visitor: socket.socket, data: bytes) -> None:
    visitor.sendall(data)
    visitor.shutdown(socket.SHUT_WR)


def exchange(port: int, data: bytes, before_sending: Callable[[], object] = lambda: None) -> bytes:
    """Connect as a visitor, send ``data`` and shut down writing; return what came back until EOF.

    Sending runs in a thread while this one reads, so a reply that flows
    while the request is still being sent cannot deadlock the two.
    """
    with connect(port) as visitor, ThreadPoolExecutor(1) as sender:
        before_sending()
        sent = sender.submit(_send_then_shut, visitor, data)
        received = receive_all(visitor)
        sent.result(TIMEOUT)
    return received


def fingerprint(data: bytes) -> tuple[int, str]:
    """Length and SHA-256 of ``data``: short to print when a comparison fails."""
    return len(data), hashlib.sha256(data).hexdigest()


def assert_echoes(public_port: int) -> None:
    assert exchange(public_port, b"ping through the tunnel") == b"ping through the tunnel"


def closed_port() -> int:
    """A port of 127.0.0.1 on which nothing listens."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_until_refused(port: int, within: float) -> None:
    """Poll until connecting to 127.0.0.1:``port`` is refused; fail after ``within`` seconds."""
    deadline = time.monotonic() + within
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=within):
                pass
        except ConnectionRefusedError:
            return
        assert time.monotonic() < deadline, f"127.0.0.1:{port} still accepts connections after {within}s"
        time.sleep(0.05)


def memory(process: Process, field: str) -> int:
    """A memory figure of ``/proc/<pid>/status`` (VmRSS, VmHWM), in bytes."""
    status = Path(f"/proc/{process.popen.pid}/status").read_text()
    return int(re.search(rf"^{field}:\s+(\d+) kB$", status, re.MULTILINE).group(1)) * 1024


def open_files(process: Process) -> int:
    """How many files (sockets included) ``process`` has open."""
    return len(list(Path(f"/proc/{process.popen.pid}/fd").iterdir()))


def start_local(processes, control_port: int, *args: str, local_port: int = 1, env=None) -> Process:
    """A spore local through 127.0.0.1:``control_port``, without waiting for anything."""
    return processes.spore(
        "local", str(local_port), "--to", "127.0.0.1", "--control-port", str(control_port),
        "--local-host", "127.0.0.1", *args, env=env,
    )


def assert_gives_up(process: Process, message: str, timeout: float = QUICKLY) -> None:
    """The client exits with status 1 within ``timeout``, saying ``message`` (a regex), having opened nothing."""
    assert process.wait(timeout) == 1, process.stderr
    assert re.search(message, process.stderr), process.stderr
    assert "listening at" not in process.stdout
