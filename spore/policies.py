"""Who may connect to the listening ports: an address filter and a per-address limit.

Both wrap the real factories.  A refused connection is one for which
``buildProtocol`` returns None: Twisted then closes it at once, without
reading or writing a byte.  Refusals are not logged one by one (a flood
would flood the log): ``on_refused`` counts them (see spore.shedding).
Wrap them outside any TLS layer
(``AddressFilter(LimitPerPeer(TLSMemoryBIOFactory(..., factory), limit), rules)``):
TLSMemoryBIOFactory would wrap a None it got from inside.
"""

from __future__ import annotations

from typing import Callable

from twisted.internet.interfaces import (
    IAddress,
    IHalfCloseableProtocol,
    IProtocol,
    IProtocolFactory,
)
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory
from zope.interface import alsoProvides

from spore.access import AccessRules, peer_key


class AddressFilter(WrappingFactory):
    """Refuses the connections whose source address the access rules do not admit."""

    noisy = False

    def __init__(
        self, wrappedFactory: IProtocolFactory, rules: AccessRules, on_refused: Callable[[], object] = lambda: None
    ) -> None:
        super().__init__(wrappedFactory)
        self.rules = rules
        self.refused = 0
        self.on_refused = on_refused

    def buildProtocol(self, addr: IAddress | None) -> IProtocol | None:
        host = getattr(addr, "host", None)
        if host is not None and not self.rules.admits(host):
            self.refused += 1
            self.on_refused()
            return None
        # Nothing more to do for an admitted connection, so no wrapper: its
        # protocol keeps its own transport and interfaces.
        return self.wrappedFactory.buildProtocol(addr)


class PeerLimit:
    """How many connections each source address has open, against one limit.

    One PeerLimit is shared by the control port and every public port, so
    that an address has one budget for all of them.
    """

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError("the connection limit per address must be at least 1")
        self.limit = limit
        self.counts: dict[str, int] = {}
        self.refused = 0

    def take(self, host: str) -> bool:
        """Count a new connection from ``host``, or refuse it (False) if ``host`` is at its limit."""
        count = self.counts.get(host, 0)
        if count >= self.limit:
            return False
        self.counts[host] = count + 1
        return True

    def give_back(self, host: str) -> None:
        """A connection from ``host`` no longer counts."""
        count = self.counts[host] - 1
        if count:
            self.counts[host] = count
        else:
            del self.counts[host]  # so the dict holds only the addresses connected now


class CountedProtocol(ProtocolWrapper):
    """A connection that holds one of its address's slots until it closes.

    The protocol inside can give the slot back early with
    ``getattr(self.transport, "stop_counting", None)``: ProtocolWrapper (and
    so TLSMemoryBIOProtocol, its subclass) passes the attribute lookups it
    cannot answer on to its own transport, so the lookup reaches this wrapper
    through any stack of wrappers.  It finds None when no limit applies.
    """

    factory: LimitPerPeer

    def __init__(self, factory: LimitPerPeer, wrappedProtocol: IProtocol, host: str) -> None:
        super().__init__(factory, wrappedProtocol)
        self.host = host
        self.counting = True

    def stop_counting(self) -> None:
        """Give the slot back now rather than when the connection closes (only once)."""
        if self.counting:
            self.counting = False
            self.factory.limit.give_back(self.host)

    def makeConnection(self, transport) -> None:
        half_closeable = IHalfCloseableProtocol.providedBy(self.wrappedProtocol)
        ProtocolWrapper.makeConnection(self, transport)
        if half_closeable:
            # ProtocolWrapper does not pass half-closes on: without this,
            # Twisted would turn a peer's FIN into a full close.
            alsoProvides(self, IHalfCloseableProtocol)

    def readConnectionLost(self) -> None:
        self.wrappedProtocol.readConnectionLost()

    def writeConnectionLost(self) -> None:
        self.wrappedProtocol.writeConnectionLost()

    def connectionLost(self, reason) -> None:
        self.stop_counting()
        ProtocolWrapper.connectionLost(self, reason)


class LimitPerPeer(WrappingFactory):
    """Refuses a connection from an address that already has its limit of them open.

    Peers that are not IP addresses (UNIX sockets) are local and not counted.
    """

    noisy = False
    protocol = CountedProtocol

    def __init__(
        self,
        wrappedFactory: IProtocolFactory,
        limit: PeerLimit,
        exempt: Callable[[str], bool] = lambda host: False,
        on_refused: Callable[[], object] = lambda: None,
    ) -> None:
        super().__init__(wrappedFactory)
        self.limit = limit
        self.exempt = exempt
        self.on_refused = on_refused

    def buildProtocol(self, addr: IAddress | None) -> IProtocol | None:
        host = peer_key(addr)
        if host is None:
            return self.wrappedFactory.buildProtocol(addr)
        if not self.limit.take(host):
            if self.exempt(host):
                # Past its budget but exempt (on the control port: the owner
                # of a tunnel, whose data connections must not be throttled;
                # they soon stop counting anyway).  Admitted, not counted.
                return self.wrappedFactory.buildProtocol(addr)
            self.limit.refused += 1
            self.on_refused()
            return None
        protocol = None
        try:
            protocol = self.wrappedFactory.buildProtocol(addr)
        finally:
            if protocol is None:  # refused further in, or failed: no connection holds the slot
                self.limit.give_back(host)
        return None if protocol is None else self.protocol(self, protocol, host)
