"""Socket options for the sockets that carry tunnelled bytes."""

from __future__ import annotations

import socket

READ_SIZE = 256 * 1024
"""Bytes a spliced connection reads at once (Twisted's default is 64 KiB).

Fewer, larger reads and writes per megabyte forwarded.  Twisted also pauses
the other side once this much waits in a connection's write buffer.
"""


def _underlying(transport):
    """The TCP transport or listening port under ``transport``, looking through wrappers such as TLS."""
    for _ in range(8):  # wrappers hold the transport they wrap in .transport
        # Its own attribute, not one a ProtocolWrapper's __getattr__ answers
        # for its transport; and not through vars(), which would give every
        # connection a dict of its attributes to keep (a hundred bytes or more).
        try:
            own = object.__getattribute__(transport, "socket")
        except AttributeError:
            own = None
        if isinstance(own, socket.socket):
            return transport
        transport = getattr(transport, "transport", None)
        if transport is None or isinstance(transport, type):
            return None
    return None


def underlying_socket(transport) -> socket.socket | None:
    """The socket under a transport or a listening port, looking through wrappers such as TLS."""
    connection = _underlying(transport)
    return None if connection is None else connection.socket


def set_buffers(transport, sndbuf: int | None, recbuf: int | None) -> None:
    """Set SO_SNDBUF and SO_RCVBUF on the socket of ``transport`` (or of a listening port)."""
    sock = underlying_socket(transport)
    if sock is not None:
        _set_buffers(sock, sndbuf, recbuf)


def tune(transport, sndbuf: int | None, recbuf: int | None) -> None:
    """Set up a connection that carries tunnelled bytes: no Nagle delay, large reads, and the buffer sizes asked for.

    Nagle's algorithm would hold back a small write until the last one is
    acknowledged: a request and its response through two hops would wait on it.
    """
    connection = _underlying(transport)
    if connection is not None:
        connection.bufferSize = READ_SIZE
        connection.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        _set_buffers(connection.socket, sndbuf, recbuf)


def _set_buffers(sock: socket.socket, sndbuf: int | None, recbuf: int | None) -> None:
    if sndbuf:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
    if recbuf:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, recbuf)


def keep_alive(transport, idle: int = 10, interval: int = 5, count: int = 3) -> None:
    """Have the kernel probe an idle connection, so a dead peer is noticed even when nothing is sent."""
    sock = underlying_socket(transport)
    if sock is None:
        return
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for option, value in (("TCP_KEEPIDLE", idle), ("TCP_KEEPINTVL", interval), ("TCP_KEEPCNT", count)):
        if hasattr(socket, option):  # Linux; elsewhere the system's timing applies
            sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, option), value)


def give_up_unacknowledged(transport, seconds: float) -> None:
    """Drop the connection when data sent stays unacknowledged this long (Linux's TCP_USER_TIMEOUT)."""
    sock = underlying_socket(transport)
    if sock is not None and hasattr(socket, "TCP_USER_TIMEOUT"):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, int(seconds * 1000))
