"""Socket buffer sizes for the sockets that carry tunnelled bytes."""

from __future__ import annotations

import socket


def underlying_socket(transport) -> socket.socket | None:
    """The socket under a transport or a listening port, looking through wrappers such as TLS."""
    for _ in range(8):  # wrappers hold the transport they wrap in .transport
        if isinstance(getattr(transport, "socket", None), socket.socket):
            return transport.socket  # a TCP transport or listening port
        transport = getattr(transport, "transport", None)
        if transport is None or isinstance(transport, type):
            return None
    return None


def set_buffers(transport, sndbuf: int | None, recbuf: int | None) -> None:
    """Set SO_SNDBUF and SO_RCVBUF on the socket of ``transport`` (or of a listening port)."""
    if not (sndbuf or recbuf):
        return
    sock = underlying_socket(transport)
    if sock is None:
        return
    if sndbuf:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
    if recbuf:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, recbuf)
