"""Writing to a TCP connection, and ending its writing, at once instead of on the reactor's next turn.

Twisted's TCP transports never send from ``write()``: they queue the bytes,
ask epoll to report the socket writable, send on the next turn and stop
watching it (two ``epoll_ctl`` and a turn per write).  Every visitor's bytes
and every control frame are written that way twice on their path through a
tunnel.  ``write_now`` sends straight to the socket when nothing is queued
before it, and queues only what the kernel did not take, so the order of bytes
and Twisted's backpressure (its buffer, its producer) are as before.
``lose_write_now`` sends the FIN of a half-close at once in the same case.

This is the one place that reads a Twisted TCP transport's private state:
``tests/test_sending.py`` fails if a Twisted upgrade changes it.
"""

from __future__ import annotations

from twisted.internet import tcp
from twisted.protocols.policies import ProtocolWrapper

_TCP = (tcp.Server, tcp.Client)


def raw_tcp(transport):
    """The TCP connection bytes written to ``transport`` go to unchanged, or None (TLS, or not TCP)."""
    # Wrappers that only pass writes on (the per-address limit's) are looked through.
    while isinstance(transport, ProtocolWrapper) and type(transport).write is ProtocolWrapper.write:
        transport = transport.transport
    if type(transport) in _TCP and not transport.TLS:
        return transport
    return None


def _idle(transport) -> bool:
    """Nothing waits to be sent on this TCP connection, and it may still send."""
    return not (
        transport._tempDataLen
        or transport.offset != len(transport.dataBuffer)
        or transport.disconnecting
        or transport._writeDisconnecting
        or not transport.connected
    )


def write_now(transport, data: bytes) -> None:
    """``transport.write(data)``, sending at once what the socket takes when nothing waits before it.

    ``transport`` is a TCP connection as ``raw_tcp`` found it; for anything
    else call its own ``write``.
    """
    if not _idle(transport):
        return transport.write(data)
    try:
        sent = transport.socket.send(data)
    except OSError:  # full (EAGAIN), or broken: Twisted's own write finds out which
        sent = 0
    if sent < len(data):
        transport.write(data[sent:])


def lose_write_now(transport) -> None:
    """``transport.loseWriteConnection()``, shutting the sending side at once when nothing waits to be sent."""
    raw = raw_tcp(transport)
    if raw is None or raw.producer is not None or not _idle(raw):
        return transport.loseWriteConnection()
    # What Twisted's doWrite does on the next turn once the buffer is empty.
    raw._writeDisconnecting = raw._writeDisconnected = True
    raw._closeWriteConnection()
