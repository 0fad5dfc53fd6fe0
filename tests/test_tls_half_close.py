"""Half-close over TLS: close_notify as a FIN in one direction, the other still flowing.

Real TLS over loopback sockets, between the transports that
``spore.handshake_budget.wrap_server_factory`` (the server's) and
``wrap_client_endpoint`` make.
"""

from __future__ import annotations

import pytest
import pytest_twisted
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import HostnameEndpoint, TCP4ServerEndpoint
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IHalfCloseableProtocol, IHandshakeListener
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import globalLogPublisher
from twisted.python.failure import Failure
from zope.interface import implementer

from spore.handshake_budget import HandshakeBudget, wrap_server_factory
from spore.tls import (
    client_options,
    server_options,
    wrap_client_endpoint,
)

TIMEOUT = 5
REQUEST = b"the whole request"
REPLY = bytes(range(256)) * 4096  # 1 MiB


@implementer(IHandshakeListener)
class Peer(Protocol):
    """One end of a TLS connection that the test drives, recording what happens to it."""

    def __init__(self) -> None:
        self.received = b""
        self.made: Deferred[None] = Deferred()
        self.handshaken: Deferred[None] = Deferred()
        self.ended: Deferred[None] = Deferred()

    def connectionMade(self) -> None:
        self.made.callback(None)

    def handshakeCompleted(self) -> None:
        self.handshaken.callback(None)

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason: Failure) -> None:
        self.reason = reason
        self.ended.callback(None)


@implementer(IHalfCloseableProtocol)
class HalfCloser(Peer):
    """A peer that hears about each direction closing on its own."""

    def __init__(self) -> None:
        super().__init__()
        self.read_closed: Deferred[bytes] = Deferred()
        self.write_closed: Deferred[None] = Deferred()

    def readConnectionLost(self) -> None:
        self.read_closed.callback(self.received)

    def writeConnectionLost(self) -> None:
        self.write_closed.callback(None)


@pytest.fixture
def logged_errors():
    """Errors and tracebacks logged during the test: there should be none."""
    errors: list[dict] = []

    def observe(event: dict) -> None:
        if "log_failure" in event or event.get("isError"):
            errors.append(event)

    globalLogPublisher.addObserver(observe)
    yield errors
    globalLogPublisher.removeObserver(observe)


def wait(d: Deferred, reactor) -> Deferred:
    return d.addTimeout(TIMEOUT, reactor)


async def connect(reactor, pki, server: Peer, client: Peer, handshake_first: bool):
    """A TLS connection between ``server`` and ``client``; returns the listening port."""
    factory = wrap_server_factory(
        Factory.forProtocol(lambda: server), server_options(*pki.server), HandshakeBudget(reactor)
    )
    port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(factory)
    endpoint = HostnameEndpoint(reactor, "127.0.0.1", port.getHost().port)
    endpoint = wrap_client_endpoint(endpoint, client_options("127.0.0.1", pki.ca))
    connected = await wait(endpoint.connect(Factory.forProtocol(lambda: client)), reactor)
    assert connected is client  # the caller's protocol, not the TLS layer
    await wait(server.made, reactor)
    if handshake_first:
        await wait(client.handshaken, reactor)
        await wait(server.handshaken, reactor)
    return port


async def ended(reactor, *peers: Peer) -> list[Failure]:
    """Why each peer's connection ended, once it has."""
    for peer in peers:
        await wait(peer.ended, reactor)
    return [peer.reason for peer in peers]


# handshake_first=False half-closes at once, before the TLS handshake is done.
@pytest_twisted.ensureDeferred
@pytest.mark.parametrize("handshake_first", [True, False])
@pytest.mark.parametrize("first", ["client", "server"])
async def test_the_reply_flows_after_the_other_side_half_closes(reactor, pki, logged_errors, first, handshake_first):
    server, client = HalfCloser(), HalfCloser()
    port = await connect(reactor, pki, server, client, handshake_first)
    try:
        asker, answerer = (client, server) if first == "client" else (server, client)
        asker.transport.write(REQUEST)
        asker.transport.loseWriteConnection()
        await wait(asker.write_closed, reactor)
        assert await wait(answerer.read_closed, reactor) == REQUEST
        answerer.transport.write(REPLY)
        # Both directions are done now: this closes the connection.
        answerer.transport.loseWriteConnection()
        reasons = await ended(reactor, asker, answerer)
    finally:
        await port.stopListening()
    assert asker.received == REPLY
    assert all(reason.check(ConnectionDone) for reason in reasons)
    assert not answerer.write_closed.called  # it closed in full instead
    assert not asker.read_closed.called  # the close_notify ended the connection
    assert logged_errors == []


@pytest_twisted.ensureDeferred
async def test_a_close_notify_closes_a_protocol_that_cannot_half_close(reactor, pki, logged_errors):
    # As Twisted's own TLS does: it answers with its close_notify and hangs up.
    server, client = Peer(), HalfCloser()
    port = await connect(reactor, pki, server, client, handshake_first=True)
    try:
        client.transport.write(REQUEST)
        client.transport.loseWriteConnection()
        reasons = await ended(reactor, server, client)
    finally:
        await port.stopListening()
    assert server.received == REQUEST
    assert all(reason.check(ConnectionDone) for reason in reasons)
    assert logged_errors == []


@pytest_twisted.ensureDeferred
async def test_writes_after_a_half_close_are_dropped(reactor, pki, logged_errors):
    # As TCP drops them after its FIN, instead of failing the connection.
    server, client = HalfCloser(), HalfCloser()
    port = await connect(reactor, pki, server, client, handshake_first=True)
    try:
        client.transport.write(REQUEST)
        client.transport.loseWriteConnection()
        client.transport.write(b"too late")
        assert await wait(server.read_closed, reactor) == REQUEST
        server.transport.write(REPLY)
        server.transport.loseConnection()
        reasons = await ended(reactor, server, client)
    finally:
        await port.stopListening()
    assert client.received == REPLY
    assert all(reason.check(ConnectionDone) for reason in reasons)
    assert logged_errors == []
