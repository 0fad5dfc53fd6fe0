"""How the client makes its two connections per visitor: to the server, and to the local service.

An endpoint wraps each connection it makes in a factory, a protocol and a
Deferred of its own, and passes every event of the connection through them.
For an IP address without TLS (the common case: a local service on
127.0.0.1, a server given by address), ``reactor.connectTCP`` does the same
job without them, on the path every visitor takes.  A host name (the
default local host, ``localhost``) is resolved by its endpoint now and then,
and the address it reached is dialled directly in between
(``RememberingDialer``).  Anything else (TLS, a ``--connect`` endpoint
string) is dialled through its endpoint.
"""

from __future__ import annotations

from typing import Callable, Protocol

from twisted.internet.abstract import isIPAddress, isIPv6Address
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.interfaces import IProtocol, IStreamClientEndpoint
from twisted.internet.protocol import ClientFactory, Factory
from twisted.python.failure import Failure

Build = Callable[[], IProtocol]
Failed = Callable[[Failure], object]

REMEMBER_FOR = 5.0
"""Seconds for which a host name's address, once a connection reached it, is dialled without resolving the name."""


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
        self.dial_factory(QuietFactory(build), failed)

    def dial_factory(self, factory: Factory, failed: Failed) -> None:
        self.endpoint.connect(factory).addErrback(failed)


def reached(addr) -> str | None:
    """The IP address a connection reached, if ``reactor.connectTCP`` can dial it again as it is."""
    if isinstance(addr, (IPv4Address, IPv6Address)) and not getattr(addr, "scopeID", 0):
        return addr.host
    return None  # a link-local IPv6 address needs its interface: left to the endpoint


class _Learning(Factory):
    """One connection through an endpoint, telling ``learned`` the address it reached."""

    noisy = False

    def __init__(self, build: Build, learned: Callable[[object], None]) -> None:
        self.build = build
        self.learned = learned

    def buildProtocol(self, addr) -> IProtocol:
        build, learned, self.build, self.learned = self.build, self.learned, None, None
        learned(addr)
        return build()


class RememberingDialer:
    """Dials a host name through its endpoint, and for a while after the address a connection reached.

    Resolving a name on every visitor's path costs a round trip through the
    reactor's thread pool and ``HostnameEndpoint``'s racing of attempts:
    twice the client's CPU per visitor for ``localhost``, measured.  The name is
    resolved again once ``remember_for`` seconds have passed since its address
    was learned, and whenever a direct connection to it fails: then that
    visitor is dialled through the endpoint, so a name that moved costs one
    attempt, never a visitor.
    """

    def __init__(
        self, reactor, endpoint: IStreamClientEndpoint, port: int, timeout: float, remember_for: float = REMEMBER_FOR
    ) -> None:
        self.reactor = reactor
        self.endpoint = EndpointDialer(endpoint)
        self.port, self.timeout, self.remember_for = port, timeout, remember_for
        self.address: str | None = None
        self.until = 0.0  # when the name is to be resolved again

    def dial(self, build: Build, failed: Failed) -> None:
        address = self.address
        if address is None or self.reactor.seconds() >= self.until:
            self._resolve(build, failed)
            return

        def resolve_instead(reason: Failure) -> None:
            if self.address == address:
                self.address = None
            self._resolve(build, failed)

        self.reactor.connectTCP(address, self.port, _Attempt(build, resolve_instead), timeout=self.timeout)

    def _resolve(self, build: Build, failed: Failed) -> None:
        self.endpoint.dial_factory(_Learning(build, self._learn), failed)

    def _learn(self, addr) -> None:
        self.address = reached(addr)
        self.until = self.reactor.seconds() + self.remember_for
