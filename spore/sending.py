"""Writing to a TCP connection at once instead of on the reactor's next turn.

Twisted's TCP transports never send from ``write()``: they queue the bytes,
ask epoll to report the socket writable, send on the next turn and stop
watching it (two ``epoll_ctl`` and a turn per write).  Every visitor's bytes
and every control frame are written that way twice on their path through a
tunnel.  ``write_now`` sends straight to the socket when nothing is queued
before it, and queues only what the kernel did not take, so the order of bytes
and Twisted's backpressure (its buffer, its producer) are as before.

This is the one place that reads a Twisted TCP transport's private state:
``tests/test_sending.py`` fails if a Twisted upgrade changes it.
"""

from __future__ import annotations

from functools import partial
from typing import Callable

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


def write_now(transport, data: bytes) -> None:
    """``transport.write(data)``, sending at once what the socket takes when nothing waits before it.

    ``transport`` is a TCP connection as ``raw_tcp`` found it; for anything
    else call its own ``write``.
    """
    if (
        transport._tempDataLen
        or transport.offset != len(transport.dataBuffer)
        or transport.disconnecting
        or transport._writeDisconnecting
        or not transport.connected
    ):
        return transport.write(data)
    try:
        sent = transport.socket.send(data)
    except OSError:  # full (EAGAIN), or broken: Twisted's own write finds out which
        sent = 0
    if sent < len(data):
        transport.write(data[sent:])


def writer(transport) -> Callable[[bytes], None]:
    """What to call to write to ``transport``: ``write_now`` where it applies, else its own ``write``."""
    raw = raw_tcp(transport)
    return transport.write if raw is None else partial(write_now, raw)
