"""In-memory stand-ins for the network, for unit tests of the protocols."""

from __future__ import annotations

import errno
import itertools

from twisted.internet.address import IPv4Address
from twisted.internet.defer import succeed
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.internet.testing import MemoryReactorClock, StringTransport
from zope.interface import implementer

_client_ports = itertools.count(40000)


class Transport(StringTransport):
    """A StringTransport that can also shut down its write half, as TCP can."""

    write_closed = False

    def loseWriteConnection(self) -> None:
        self.write_closed = True

    @property
    def closed(self) -> bool:
        return self.disconnecting


def connect(factory, peer_host="127.0.0.1") -> tuple[object, Transport]:
    """Build a protocol from ``factory`` and connect it to a fresh Transport: (None, None) if refused.

    ``peer_host`` is an IPv4 address, or the whole address of the peer.
    """
    address = IPv4Address("TCP", peer_host, next(_client_ports)) if isinstance(peer_host, str) else peer_host
    protocol = factory.buildProtocol(address)
    if protocol is None:
        return None, None
    transport = Transport(peerAddress=address)
    protocol.makeConnection(transport)
    return protocol, transport


class _Port:
    def __init__(self, reactor: TunnelReactor, port: int, factory) -> None:
        self.reactor, self.port, self.factory = reactor, port, factory

    def getHost(self) -> IPv4Address:
        return IPv4Address("TCP", "127.0.0.1", self.port)

    def stopListening(self):
        self.reactor.listening.pop(self.port, None)
        return succeed(None)


class TunnelReactor(MemoryReactorClock):
    """A memory reactor whose listening ports can be taken, freed and visited."""

    def __init__(self, taken: set[int] = frozenset()) -> None:
        super().__init__()
        self.listening: dict[int, _Port] = {}
        self.taken = set(taken)

    def listenTCP(self, port, factory, backlog=50, interface=""):
        if port in self.listening or port in self.taken:
            raise CannotListenError(interface, port, OSError(errno.EADDRINUSE, "Address already in use"))
        self.listening[port] = _Port(self, port, factory)
        return self.listening[port]

    def visit(self, port: int, host: str = "127.0.0.1"):
        """A visitor connects to public ``port``: its (protocol, transport)."""
        return connect(self.listening[port].factory, host)


@implementer(IStreamClientEndpoint)
class MemoryEndpoint:
    """Each connect() gives a protocol on a new Transport, recorded in ``connections``."""

    def __init__(self, peer_host="127.0.0.1") -> None:
        self.connections: list[tuple[object, Transport]] = []
        self.peer_host = peer_host  # the address the name resolved to (see connect)

    def connect(self, factory):
        protocol, transport = connect(factory, self.peer_host)
        self.connections.append((protocol, transport))
        return succeed(protocol)
