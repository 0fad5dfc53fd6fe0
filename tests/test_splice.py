"""Splicing two connections: forwarding, half-close, and backpressure."""

from __future__ import annotations

import hashlib
import os

import pytest_twisted
from twisted.internet import task
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint
from twisted.internet.interfaces import IHalfCloseableProtocol, IPushProducer
from twisted.internet.protocol import Factory, Protocol
from zope.interface import implementer

from spore.splice import SpliceProtocol
from tests.fakes import Transport

TIMEOUT = 10


def spliced_pair():
    a, b = SpliceProtocol(), SpliceProtocol()
    a.makeConnection(Transport())
    b.makeConnection(Transport())
    a.splice(b)
    return a, b


def test_bytes_flow_both_ways_and_each_side_produces_for_the_other():
    a, b = spliced_pair()
    a.dataReceived(b"to b")
    b.dataReceived(b"to a")
    assert (a.transport.value(), b.transport.value()) == (b"to a", b"to b")
    assert a.transport.producer is b.transport and b.transport.producer is a.transport
    assert a.transport.streaming and b.transport.streaming


def test_a_fin_is_passed_on_and_the_other_direction_keeps_flowing():
    a, b = spliced_pair()
    a.readConnectionLost()
    assert b.transport.write_closed and b.transport.producer is None
    assert not a.transport.disconnecting
    b.dataReceived(b"reply after the fin")
    assert a.transport.value() == b"reply after the fin"


def test_a_connection_closes_once_both_directions_are_done():
    a, b = spliced_pair()
    a.readConnectionLost()
    b.writeConnectionLost()
    assert not b.transport.disconnecting
    b.readConnectionLost()
    a.writeConnectionLost()
    assert a.transport.disconnecting and b.transport.disconnecting


def test_a_lost_connection_closes_its_peer():
    a, b = spliced_pair()
    a.connectionLost(None)
    assert b.transport.disconnecting and b.peer is None and b.transport.producer is None


def test_a_fin_before_the_splice_is_passed_on_at_the_splice():
    a, b = SpliceProtocol(), SpliceProtocol()
    a.makeConnection(Transport())
    b.makeConnection(Transport())
    a.readConnectionLost()
    a.splice(b)
    assert b.transport.write_closed


# Real sockets: what the fakes cannot show.


@implementer(IPushProducer, IHalfCloseableProtocol)
class Source(Protocol):
    """Writes ``total`` random bytes as fast as its transport takes them, then a FIN."""

    def __init__(self, reactor, total):
        self.reactor, self.remaining, self.sent = reactor, total, 0
        self.digest, self.paused, self.received = hashlib.sha256(), False, b""
        self.finished = Deferred()

    def connectionMade(self):
        self.transport.registerProducer(self, True)
        self.reactor.callLater(0, self.resumeProducing)

    def pauseProducing(self):
        self.paused = True

    def resumeProducing(self):
        self.paused = False
        while not self.paused and self.remaining:
            chunk = os.urandom(min(self.remaining, 65536))
            self.digest.update(chunk)
            self.remaining -= len(chunk)
            self.sent += len(chunk)
            self.transport.write(chunk)
        if not self.remaining and self.transport.producer is not None:
            self.transport.unregisterProducer()
            self.transport.loseWriteConnection()

    def stopProducing(self):
        self.remaining = 0

    def dataReceived(self, data):
        self.received += data

    def readConnectionLost(self):
        self.transport.loseConnection()

    def writeConnectionLost(self):
        pass

    def connectionLost(self, reason):
        self.finished.callback(self.received)


@implementer(IHalfCloseableProtocol)
class Sink(Protocol):
    """Reads everything, answers once the other side has finished, then closes."""

    def __init__(self):
        self.digest, self.count, self.done = hashlib.sha256(), 0, Deferred()

    def dataReceived(self, data):
        self.digest.update(data)
        self.count += len(data)

    def readConnectionLost(self):
        self.transport.write(b"all received")
        self.transport.loseConnection()
        self.done.callback(None)

    def writeConnectionLost(self):
        pass


async def through_splice(reactor, source, sink):
    """Connect source -> [splice] -> sink over loopback: the two splice ends."""
    accepted = []

    class Accepting(Factory):
        def buildProtocol(self, addr):
            accepted.append(SpliceProtocol())
            return accepted[-1]

    ports = [await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(Accepting()) for _ in range(2)]
    for port, protocol in zip(ports, (source, sink)):
        await TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port).connect(Factory.forProtocol(lambda p=protocol: p))
    for _ in range(100):
        if len(accepted) == 2:
            break
        await task.deferLater(reactor, 0.01)
    accepted[0].splice(accepted[1])
    for port in ports:
        await port.stopListening()
    return accepted


@pytest_twisted.ensureDeferred
async def test_a_reader_that_stops_reading_stops_the_sender(reactor):
    total = 256 * 1024 * 1024
    source, sink = Source(reactor, total), Sink()
    near, far = await through_splice(reactor, source, sink)
    sink.transport.pauseProducing()

    # Wait, boundedly, for the pipeline to fill and the source to be held back.
    for _ in range(200):
        await task.deferLater(reactor, 0.02)
        if source.paused and near.transport not in reactor.getReaders():
            break
    await task.deferLater(reactor, 0.3)
    assert source.paused and near.transport not in reactor.getReaders()
    # What got out is what the kernel's socket buffers hold, not Spore's memory.
    assert source.sent < 32 * 1024 * 1024

    # Once the reader reads again, every byte arrives, in order.
    source.remaining = 0  # stop offering more: check what was sent
    sink.transport.resumeProducing()
    source.resumeProducing()
    await sink.done.addTimeout(TIMEOUT, reactor)
    assert (sink.count, sink.digest.hexdigest()) == (source.sent, source.digest.hexdigest())
    assert await source.finished.addTimeout(TIMEOUT, reactor) == b"all received"


@pytest_twisted.ensureDeferred
async def test_a_reply_after_a_half_close_arrives_whole(reactor):
    source, sink = Source(reactor, 3 * 1024 * 1024), Sink()
    await through_splice(reactor, source, sink)
    await sink.done.addTimeout(TIMEOUT, reactor)
    assert (sink.count, sink.digest.hexdigest()) == (source.sent, source.digest.hexdigest())
    assert await source.finished.addTimeout(TIMEOUT, reactor) == b"all received"
