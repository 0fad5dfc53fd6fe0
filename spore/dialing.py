"""How the client makes its two connections per visitor: to the server, and to the local service.

An endpoint wraps each connection it makes in a factory, a protocol and a
Deferred of its own, and passes every event of the connection through them.
For an IP address without TLS (the common case: a local service on
127.0.0.1, a server given by address), ``reactor.connectTCP`` does the same
job without them, on the path every visitor takes.  Anything else (a host
name, TLS, a ``--connect`` endpoint string) is dialled through its endpoint.
"""

from __future__ import annotations

from typing import Callable, Protocol

from twisted.internet.abstract import isIPAddress, isIPv6Address
from twisted.internet.interfaces import IProtocol, IStreamClientEndpoint
from twisted.internet.protocol import ClientFactory, Factory
from twisted.python.failure import Failure

Build = Callable[[], IProtocol]
Failed = Callable[[Failure], object]


class Dialer(Protocol):
    def dial(self, build: Build, failed: Failed) -> None:
        """Connect with a protocol from ``build``, or call ``failed`` with why it could not."""


def tcp_dialer(reactor, host: str, port: int, timeout: float) -> TCPDialer | None:
    """A ``TCPDialer`` for an IP address; None for a host name, which its endpoint resolves."""
    return TCPDialer(reactor, host, port, timeout) if isIPAddress(host) or isIPv6Address(host) else None


class _Attempt(ClientFactory):
    """One connection attempt of ``reactor.connectTCP``."""

    noisy = False

    def __init__(self, build: Build, failed: Failed) -> None:
        self.build = build
        self.failed = failed

    def buildProtocol(self, addr) -> IProtocol:
        # Connected: it can no longer fail to connect.  The connection keeps
        # this factory for as long as it is open, so let go of what the two
        # callables hold (a visitor's Deferreds).
        build, self.build, self.failed = self.build, None, None
        return build()

    def clientConnectionFailed(self, connector, reason: Failure) -> None:
        self.failed(reason)


class TCPDialer:
    """Dials an IP address and port with ``reactor.connectTCP``."""

    def __init__(self, reactor, host: str, port: int, timeout: float) -> None:
        self.reactor = reactor
        self.host, self.port, self.timeout = host, port, timeout

    def dial(self, build: Build, failed: Failed) -> None:
        self.reactor.connectTCP(self.host, self.port, _Attempt(build, failed), timeout=self.timeout)


class QuietFactory(Factory):
    """Builds a protocol per connection with ``build``, without logging when it starts and stops."""

    noisy = False

    def __init__(self, build: Build) -> None:
        self.build = build

    def buildProtocol(self, addr) -> IProtocol:
        return self.build()


class EndpointDialer:
    """Dials through an endpoint."""

    def __init__(self, endpoint: IStreamClientEndpoint) -> None:
        self.endpoint = endpoint

    def dial(self, build: Build, failed: Failed) -> None:
        self.endpoint.connect(QuietFactory(build)).addErrback(failed)
