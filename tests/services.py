"""Local TCP services on 127.0.0.1 for integration tests: each connection in a thread."""

from __future__ import annotations

import hashlib
import os
import socket
import threading
import time
from typing import Callable

Handler = Callable[[socket.socket], None]


class Service:
    """Listens on 127.0.0.1 (on ``port``, or one the OS chooses) and runs ``handler`` per connection."""

    def __init__(self, handler: Handler, port: int = 0) -> None:
        self.handler = handler
        self.listener = socket.create_server(("127.0.0.1", port), backlog=256)
        self.port: int = self.listener.getsockname()[1]
        self.connections = 0
        self._threads: list[threading.Thread] = []
        self._accepting = threading.Thread(target=self._accept, daemon=True)
        self._accepting.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            thread = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _serve(self, conn: socket.socket) -> None:
        conn.settimeout(30)
        with conn:
            try:
                self.handler(conn)
            except OSError:
                pass

    def close(self) -> None:
        try:
            self.listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept()
        except OSError:
            pass
        self.listener.close()
        self._accepting.join(5)


def echo(conn: socket.socket) -> None:
    """Send back every byte, then shut down writing once the peer has."""
    while data := conn.recv(65536):
        conn.sendall(data)
    conn.shutdown(socket.SHUT_WR)


def echo_until_idle(conn: socket.socket, idle: float = 1.0) -> None:
    """Echo, and close once the peer has sent nothing for ``idle`` seconds (as servers drop idle clients)."""
    conn.settimeout(idle)
    try:
        while data := conn.recv(65536):
            conn.sendall(data)
    except TimeoutError:
        pass


REPLY_SIZE = 1 << 20


def reply_to(request: bytes) -> bytes:
    """The 1 MiB reply of ``reply_after_eof``: it proves the whole request arrived."""
    return hashlib.sha256(request).digest() * (REPLY_SIZE // 32)


def reply_after_eof(conn: socket.socket) -> None:
    """Read the request until the peer shuts down writing, only then reply and close."""
    request = b""
    while chunk := conn.recv(65536):
        request += chunk
    conn.sendall(reply_to(request))


class Flood:
    """A handler that writes as fast as the peer takes bytes, within bounds.

    It stops after ``limit`` bytes, after ``seconds``, or once a single send
    has been blocked for ``stall`` seconds (``stalled`` is then true), and
    closes.  ``written`` and ``digest`` describe what the kernel accepted,
    which is what the peer must eventually receive.
    """

    def __init__(self, limit: int, seconds: float, stall: float) -> None:
        self.limit = limit
        self.seconds = seconds
        self.stall = stall
        self.written = 0
        self.stalled = False
        self.digest = hashlib.sha256()
        self.done = threading.Event()

    def __call__(self, conn: socket.socket) -> None:
        try:
            conn.settimeout(self.stall)
            chunk = os.urandom(1 << 16)
            deadline = time.monotonic() + self.seconds
            while self.written < self.limit and time.monotonic() < deadline:
                try:
                    sent = conn.send(chunk)
                except TimeoutError:
                    self.stalled = True
                    return
                self.digest.update(chunk[:sent])
                self.written += sent
        finally:
            self.done.set()
