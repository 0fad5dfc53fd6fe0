"""Two TCP connections joined so that bytes flow both ways.

The pattern of Twisted's ``portforward``: each side's transport is registered
as a streaming producer on the other, so when one side's peer stops reading
and its write buffer fills, Twisted stops reading from the other side instead
of buffering without bound.  A FIN in one direction is passed on as a FIN
(``loseWriteConnection``) while the other direction keeps flowing, as bore 0.6
does; a connection is closed once both of its directions are done.
"""

from __future__ import annotations

from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.internet.main import CONNECTION_DONE
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from spore.sending import lose_write_now, raw_tcp, write_now


@implementer(IHalfCloseableProtocol)
class SpliceProtocol(Protocol):
    """One side of a spliced pair; the other side is ``peer``."""

    log = Logger()
    peer: SpliceProtocol | None = None
    _raw = None  # the TCP connection under the transport, written to at once (spore.sending); None: TLS, or not TCP
    _read_done = False
    _write_done = False
    _consuming = False  # the peer's transport is registered as our producer

    def makeConnection(self, transport) -> None:
        self._raw = raw_tcp(transport)
        super().makeConnection(transport)

    def write(self, data: bytes) -> None:
        """``self.transport.write(data)``, sending at once where it can (spore.sending)."""
        raw = self._raw
        if raw is None:
            self.transport.write(data)
        else:
            write_now(raw, data)

    def read_now(self) -> None:
        """Read what waits on the connection now instead of on the reactor's next turn.

        For bytes that are there already (a visitor's request, waiting for
        its claim), so they are on their way before the rest of this turn's
        work.  An end of the connection is left for the reactor to find (a
        FIN stays readable); an error, or an exception from the protocol,
        aborts it as the reactor would.  Only on plain TCP: TLS reads through
        its own protocol.
        """
        raw = self._raw
        if raw is None or not raw.connected or raw.disconnecting:
            return
        try:
            why = raw.doRead()
        except Exception:
            self.log.failure("while reading from {connection}", connection=raw)
            raw.abortConnection()
            return
        if why is not None and why is not CONNECTION_DONE:
            raw.abortConnection()

    def write_peer(self, data: bytes) -> None:
        peer = self.peer
        if peer is not None:  # else the peer is gone, and so are the bytes meant for it
            peer.write(data)

    def splice(self, peer: SpliceProtocol) -> None:
        """Join this connection to ``peer`` and start reading from both."""
        self.peer, peer.peer = peer, self
        for side in (self, peer):
            side.transport.registerProducer(side.peer.transport, True)
            side._consuming = True
        for side in (self, peer):
            if side._read_done:
                # Its FIN came before the splice: pass it on now.
                side.peer._peer_finished()
            else:
                side.transport.resumeProducing()

    def dataReceived(self, data: bytes) -> None:
        self.write_peer(data)

    def readConnectionLost(self) -> None:
        self._read_done = True
        if self.peer is not None:
            self.peer._peer_finished()
        if self._write_done:
            self.transport.loseConnection()

    def writeConnectionLost(self) -> None:
        self._write_done = True
        if self._read_done:
            self.transport.loseConnection()

    def _peer_finished(self) -> None:
        # The peer will send nothing more: flush what we have, then FIN.
        self._stop_consuming()
        lose_write_now(self.transport)

    def _stop_consuming(self) -> None:
        # Twisted waits for a registered producer to produce again before it
        # shuts a transport down, so unregister a peer that will not.
        if self._consuming:
            self._consuming = False
            self.transport.unregisterProducer()

    def connectionLost(self, reason: Failure) -> None:
        peer, self.peer = self.peer, None
        if peer is not None:
            peer.peer = None
            # Nothing more can reach us: let the peer flush and close.
            peer._stop_consuming()
            peer.transport.loseConnection()
