"""Writing at once to a Twisted TCP connection (spore.sending), and reading at once, on real sockets.

These tests read what reached the kernel with a plain socket, without letting
the reactor run: they fail if write_now stops sending at once, and if a
Twisted upgrade changes the private state it reads.
"""

from __future__ import annotations

import hashlib
import os
import socket
from contextlib import contextmanager

import pytest_twisted
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionAborted
from twisted.internet.interfaces import IHalfCloseableProtocol, IPushProducer
from twisted.internet.protocol import ClientFactory, Protocol
from twisted.internet.ssl import optionsForClientTLS
from twisted.logger import Logger
from twisted.protocols.tls import TLSMemoryBIOFactory
from zope.interface import implementer

from spore.messages import Accept, Heartbeat, Hello, decode_server_message, encode
from spore.policies import CountedProtocol, LimitPerPeer, PeerLimit
from spore.sending import lose_write_now, raw_tcp, write_now
from spore.server import ServerFactory
from spore.settings import ServerSettings
from spore.splice import SpliceProtocol

TIMEOUT = 10


class Connected(ClientFactory):
    def __init__(self) -> None:
        self.made: Deferred[Protocol] = Deferred()

    def buildProtocol(self, addr) -> Protocol:
        protocol = Protocol()
        protocol.connectionMade = lambda: self.made.callback(protocol)
        return protocol


async def twisted_to_plain_socket(reactor):
    """A Twisted TCP client connected to a plain socket, which the test reads directly."""
    listener = socket.create_server(("127.0.0.1", 0))
    factory = Connected()
    reactor.connectTCP("127.0.0.1", listener.getsockname()[1], factory)
    protocol = await factory.made.addTimeout(TIMEOUT, reactor)
    plain, _ = listener.accept()
    listener.close()
    plain.settimeout(TIMEOUT)
    return protocol.transport, plain


@contextmanager
def closing(transport, plain: socket.socket):
    """Both ends closed when the test is done, whatever happened."""
    try:
        yield
    finally:
        transport.abortConnection()
        plain.close()


def recv_exactly(sock: socket.socket, size: int) -> bytes:
    chunks = []
    while size:
        chunk = sock.recv(min(size, 1 << 20))
        assert chunk, "closed early"
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


async def turn(reactor, seconds: float = 0.05) -> None:
    d = Deferred()
    reactor.callLater(seconds, d.callback, None)
    await d


@pytest_twisted.ensureDeferred
async def test_bytes_reach_the_socket_before_the_reactor_turns(reactor):
    transport, plain = await twisted_to_plain_socket(reactor)
    with closing(transport, plain):
        assert raw_tcp(transport) is transport
        write_now(transport, b"at once")
        plain.setblocking(False)
        assert plain.recv(100) == b"at once"  # raises BlockingIOError if it was only queued
        assert not transport._tempDataLen and transport.dataBuffer == b""


@pytest_twisted.ensureDeferred
async def test_bytes_queued_before_keep_their_place(reactor):
    transport, plain = await twisted_to_plain_socket(reactor)
    with closing(transport, plain):
        transport.write(b"first ")
        write_now(transport, b"second")
        await turn(reactor)
        assert recv_exactly(plain, 12) == b"first second"


@implementer(IPushProducer)
class Producer:
    paused = False

    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        self.paused = False

    def stopProducing(self) -> None:
        pass


@pytest_twisted.ensureDeferred
async def test_what_the_kernel_does_not_take_is_queued_and_pauses_the_producer(reactor):
    transport, plain = await twisted_to_plain_socket(reactor)
    producer = Producer()
    transport.registerProducer(producer, True)
    data = os.urandom(8 << 20)  # more than any socket buffer takes
    with closing(transport, plain):
        write_now(transport, data)
        assert 0 < transport._tempDataLen < len(data)  # the kernel took some, Twisted holds the rest
        assert producer.paused
        received = hashlib.sha256()
        left, deadline = len(data), reactor.seconds() + TIMEOUT
        while left and reactor.seconds() < deadline:  # read while the reactor sends the rest
            await turn(reactor, 0.001)
            plain.setblocking(False)
            try:
                while chunk := plain.recv(1 << 20):
                    received.update(chunk)
                    left -= len(chunk)
            except BlockingIOError:
                pass
        assert received.digest() == hashlib.sha256(data).digest()
        assert not producer.paused
        transport.unregisterProducer()


@pytest_twisted.ensureDeferred
async def test_after_a_half_close_nothing_more_is_sent(reactor):
    transport, plain = await twisted_to_plain_socket(reactor)
    with closing(transport, plain):
        transport.loseWriteConnection()
        await turn(reactor)  # the FIN is sent
        write_now(transport, b"too late")
        await turn(reactor)
        assert plain.recv(100) == b""  # the FIN, and nothing after it


@pytest_twisted.ensureDeferred
async def test_tls_is_never_bypassed_and_pass_through_wrappers_are(reactor):
    transport, plain = await twisted_to_plain_socket(reactor)
    with closing(transport, plain):
        tls = TLSMemoryBIOFactory(optionsForClientTLS("example.com"), True, Connected()).buildProtocol(None)
        assert raw_tcp(tls) is None
        transport.TLS = True  # what Twisted's startTLS sets on the transport itself
        assert raw_tcp(transport) is None
        transport.TLS = False
        counted = CountedProtocol(LimitPerPeer(ClientFactory(), PeerLimit(1)), Protocol(), "127.0.0.1")
        counted.makeConnection(transport)
        assert raw_tcp(counted) is transport


@implementer(IHalfCloseableProtocol)
class HalfCloseable(Protocol):
    write_lost = False

    def writeConnectionLost(self) -> None:
        self.write_lost = True


@pytest_twisted.ensureDeferred
async def test_a_half_close_with_nothing_queued_sends_the_fin_at_once(reactor):
    transport, plain = await twisted_to_plain_socket(reactor)
    protocol = HalfCloseable()
    transport.protocol = protocol
    with closing(transport, plain):
        write_now(transport, b"all of it")
        lose_write_now(transport)
        assert protocol.write_lost and transport._writeDisconnected
        assert recv_exactly(plain, 9) == b"all of it"
        plain.setblocking(False)
        assert plain.recv(100) == b""  # the FIN is there already: no reactor turn has run
        plain.sendall(b"the other way still flows")
        await turn(reactor)
        assert transport.connected


@pytest_twisted.ensureDeferred
async def test_a_half_close_behind_queued_bytes_waits_for_them(reactor):
    transport, plain = await twisted_to_plain_socket(reactor)
    with closing(transport, plain):
        transport.write(b"queued")
        lose_write_now(transport)
        assert not transport._writeDisconnected  # Twisted sends the bytes, then the FIN
        await turn(reactor)
        assert recv_exactly(plain, 6) == b"queued" and plain.recv(100) == b""


# Reading at once (SpliceProtocol.read_now), on the same real sockets.


class Received(SpliceProtocol):
    def __init__(self, fail: bool = False) -> None:
        self.received: list[bytes] = []
        self.fail = fail
        self.ended: Deferred[None] = Deferred()
        self.lost: Deferred[Exception] = Deferred()

    def readConnectionLost(self) -> None:
        self.ended.callback(None)

    def dataReceived(self, data: bytes) -> None:
        if self.fail:
            raise RuntimeError("a protocol bug")
        self.received.append(data)

    def connectionLost(self, reason) -> None:
        self.lost.callback(reason.value)


async def spliceable_to_plain_socket(reactor, protocol: Received):
    transport, plain = await twisted_to_plain_socket(reactor)
    transport.protocol = protocol
    protocol.makeConnection(transport)
    return transport, plain


async def waiting(plain: socket.socket, transport, what: bytes) -> None:
    """``what`` sent by the plain socket and in the Twisted side's receive queue, the reactor not having read it."""
    transport.stopReading()
    plain.sendall(what)
    await turn(transport.reactor)
    transport.startReading()


@pytest_twisted.ensureDeferred
async def test_read_now_delivers_waiting_bytes_before_the_reactor_turns(reactor):
    protocol = Received()
    transport, plain = await spliceable_to_plain_socket(reactor, protocol)
    with closing(transport, plain):
        await waiting(plain, transport, b"request")
        protocol.read_now()
        assert protocol.received == [b"request"]
        protocol.read_now()  # nothing more waits: nothing happens
        assert protocol.received == [b"request"] and transport.connected


@pytest_twisted.ensureDeferred
async def test_read_now_leaves_an_end_of_stream_to_the_reactor(reactor):
    protocol = Received()
    transport, plain = await spliceable_to_plain_socket(reactor, protocol)
    with closing(transport, plain):
        transport.stopReading()
        plain.close()
        await turn(reactor)
        transport.startReading()
        protocol.read_now()
        assert transport.connected and not protocol.ended.called
        await protocol.ended.addTimeout(TIMEOUT, reactor)  # the reactor found the FIN itself


@pytest_twisted.ensureDeferred
async def test_read_now_aborts_a_connection_whose_protocol_fails(reactor):
    protocol = Received(fail=True)
    logged: list[dict] = []
    protocol.log = Logger(observer=logged.append)
    transport, plain = await spliceable_to_plain_socket(reactor, protocol)
    with closing(transport, plain):
        await waiting(plain, transport, b"request")
        protocol.read_now()
        why = await protocol.lost.addTimeout(TIMEOUT, reactor)
        assert isinstance(why, ConnectionAborted)
    assert [event["log_failure"].type for event in logged] == [RuntimeError]



async def received_by(reactor, sock: socket.socket, done) -> bytes:
    """What a non-blocking plain socket receives until ``done(received)``, the reactor running meanwhile."""
    received = b""
    for _ in range(int(TIMEOUT / 0.02)):
        try:
            received += sock.recv(4096)
        except BlockingIOError:
            pass
        if done(received):
            return received
        await turn(reactor, 0.02)
    raise AssertionError(f"not done within {TIMEOUT} s; received {received!r}")


class ServerFrames:
    """The messages a server sends on a plain socket, heartbeats left out."""

    def __init__(self, reactor, sock: socket.socket) -> None:
        self.reactor, self.sock, self.buffer = reactor, sock, b""

    async def next(self):
        while True:
            if b"\0" not in self.buffer:
                self.buffer += await received_by(self.reactor, self.sock, lambda received: b"\0" in received)
            frame, self.buffer = self.buffer.split(b"\0", 1)
            message = decode_server_message(frame)
            if not isinstance(message, Heartbeat):
                return message


def connected_with(port: int, first: bytes) -> socket.socket:
    """A plain connection whose first bytes wait for the server to accept it (it has not turned yet)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
    sock.sendall(first)
    sock.setblocking(False)
    return sock


@pytest_twisted.ensureDeferred
async def test_a_first_frame_that_came_with_the_connection_is_read_at_once_and_leaves_no_deadline(reactor):
    server = ServerFactory(ServerSettings(min_port=20000, max_port=29999, bind_tunnels="127.0.0.1"), reactor)
    control_port = reactor.listenTCP(0, server, interface="127.0.0.1")
    port = control_port.getHost().port
    sockets: list[socket.socket] = []
    try:
        sockets.append(control := connected_with(port, encode(Hello(0))))
        frames = ServerFrames(reactor, control)
        hello = await frames.next()
        sockets.append(connected_with(hello.port, b"request"))
        connection = await frames.next()
        sockets.append(data := connected_with(port, encode(Accept(connection.id))))
        assert await received_by(reactor, data, lambda received: len(received) >= 7) == b"request"
        # Both handshakes ended in the turn that accepted them: no deadline
        # of theirs is left to cut the tunnel or the visitor off later.
        assert not [call for call in reactor.getDelayedCalls() if getattr(call.func, "__name__", "") == "_timed_out"]
    finally:
        for sock in sockets:
            sock.close()
        await turn(reactor, 0.1)  # the tunnel closes with its control connection
        await control_port.stopListening()
