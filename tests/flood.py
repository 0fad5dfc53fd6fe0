"""An attacker's flood of connections on loopback, bounded in count and time.

Linux routes all of 127.0.0.0/8 to lo, so binding 127.0.0.2, 127.0.0.3, ...
as source addresses plays as many hosts.  A flood holds ``per_source``
connections from each source and reopens each as soon as the server closes
it, in a process of its own, until it is stopped, its ``seconds`` are up or it
has opened ``max_opens`` connections.
"""

from __future__ import annotations

import errno
import selectors
import socket
import ssl
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from spore import auth
from spore.messages import Authenticate, Challenge, Heartbeat, Hello, decode_server_message, encode
from tests.processes import TIMEOUT


def sources(count: int, first: int = 2) -> list[str]:
    """``count`` loopback addresses from 127.0.0.``first`` up (127.0.1.x and on past 255)."""
    return [f"127.0.{n // 256}.{n % 256}" for n in range(first, first + count)]


@dataclass
class FloodStats:
    opened: int = 0
    closed_by_server: int = 0
    open_now: int = 0
    replies: int = 0  # answers that made it hang up and come back (again_on_reply)


class ConnectionFlood:
    """Connections that never complete a handshake, held against 127.0.0.1:``port`` and refreshed.

    ``payload`` is sent once connected: nothing (a silent peer), the start
    of a frame that never ends (a peer stuck mid-frame), or a ClientHello.
    With ``again_on_reply`` a connection is closed and reopened as soon as
    the server answers (a ClientHello replayed, to make it sign again).  The flood runs in a
    process of its own, so that it takes no time from the test's own threads
    (a local service, visitors) beyond what the machine's cores cannot give.
    """

    def __init__(
        self,
        port: int,
        sources: list[str],
        per_source: int,
        payload: bytes = b"",
        again_on_reply: bool = False,
        seconds: float = 4 * TIMEOUT,
        max_opens: int = 300_000,
    ) -> None:
        self.argv = [
            sys.executable, "-m", "tests.flood", str(port), ",".join(sources), str(per_source),
            payload.hex(), str(int(again_on_reply)), str(seconds), str(max_opens),
        ]
        self.stats = FloodStats()
        self._process: subprocess.Popen | None = None
        self._ready = threading.Event()  # the first figures are in: every connection is opened

    def __enter__(self) -> ConnectionFlood:
        self._process = subprocess.Popen(
            self.argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=Path(__file__).parent.parent, text=True
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        if not self._ready.wait(TIMEOUT):
            self.stop()
            raise AssertionError(f"the flood did not start: {self.stats}")
        return self

    def _read(self) -> None:
        for line in self._process.stdout:
            self.stats = FloodStats(*map(int, line.split()))
            self._ready.set()

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self) -> FloodStats:
        """End the flood (every connection it holds is closed): its last figures."""
        process = self._process
        if process is not None and process.poll() is None:
            process.stdin.close()  # its signal to stop
            try:
                process.wait(TIMEOUT)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(TIMEOUT)
            self._reader.join(TIMEOUT)
        return self.stats


def _flood(
    port: int, sources: list[str], per_source: int, payload: bytes, again_on_reply: bool, seconds: float, max_opens: int
) -> None:
    """The flood's own process: hold and refresh, print the figures now and then, stop when stdin closes."""
    stats = FloodStats()
    selector = selectors.DefaultSelector()
    selector.register(sys.stdin, selectors.EVENT_READ, None)

    def open_from(source: str) -> None:
        if stats.opened >= max_opens:
            return
        conn = socket.socket()
        conn.setblocking(False)
        conn.bind((source, 0))
        if conn.connect_ex(("127.0.0.1", port)) not in (0, errno.EINPROGRESS):
            conn.close()
            return
        stats.opened += 1
        stats.open_now += 1
        selector.register(conn, selectors.EVENT_WRITE, source)

    def report() -> None:
        print(stats.opened, stats.closed_by_server, stats.open_now, stats.replies, flush=True)

    for source in sources:
        for _ in range(per_source):
            open_from(source)
    report()
    deadline = time.monotonic() + seconds
    reported = time.monotonic()
    while time.monotonic() < deadline:
        for key, events in selector.select(0.05):
            conn, source = key.fileobj, key.data
            if source is None:
                return  # stdin closed: the test is done with us
            if events & selectors.EVENT_WRITE:
                # Connected (or failed to): say what we say, then only listen.
                try:
                    if payload:
                        conn.send(payload)
                    selector.modify(conn, selectors.EVENT_READ, source)
                    continue
                except OSError:
                    pass
            else:
                try:
                    if conn.recv(65536):
                        if again_on_reply:
                            stats.replies += 1
                            selector.unregister(conn)
                            conn.close()
                            stats.open_now -= 1
                            open_from(source)
                        continue  # else a Challenge: read and ignored
                except BlockingIOError:
                    continue
                except OSError:
                    pass
            # Closed by the server (or never connected): come straight back.
            stats.closed_by_server += 1
            stats.open_now -= 1
            selector.unregister(conn)
            conn.close()
            open_from(source)
        if time.monotonic() - reported > 0.05:
            report()
            reported = time.monotonic()


def client_hello() -> bytes:
    """The first bytes a TLS client sends: enough for a server to do the costly half of a handshake."""
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    try:
        context.wrap_bio(incoming, outgoing, server_hostname="localhost").do_handshake()
    except ssl.SSLWantReadError:
        pass
    return outgoing.read()


def time_to_tunnel(
    control_port: int, secret: str | None = None, tls: ssl.SSLContext | None = None, port: int = 0
) -> float:
    """Seconds a bore client on 127.0.0.1 takes to have its tunnel opened: connect, answer, ``Hello`` back.

    Plays the client's side of the handshake by hand, so that the time is the
    server's and the network's, not a process start's.  The tunnel closes
    again with the connection.
    """
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", control_port), timeout=TIMEOUT) as plain:
        conn = tls.wrap_socket(plain, server_hostname="localhost") if tls else plain
        frames = _frames(conn)
        if secret is not None:
            challenge = next(frames, "nothing: the server closed the connection")
            assert isinstance(challenge, Challenge), challenge
            conn.sendall(encode(Authenticate(auth.answer(secret, challenge.id))))
        conn.sendall(encode(Hello(port)))
        for message in frames:
            if not isinstance(message, Heartbeat):
                assert isinstance(message, Hello), message
                return time.monotonic() - started
    raise AssertionError("the server closed the connection")


def _frames(conn: socket.socket):
    buffer = b""
    while chunk := conn.recv(4096):
        buffer += chunk
        while b"\0" in buffer:
            frame, buffer = buffer.split(b"\0", 1)
            yield decode_server_message(frame)


if __name__ == "__main__":
    port, addresses, per_source, payload, again, seconds, max_opens = sys.argv[1:]
    _flood(
        int(port), addresses.split(","), int(per_source), bytes.fromhex(payload), again == "1",
        float(seconds), int(max_opens),
    )
