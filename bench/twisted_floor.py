#!/usr/bin/env python3
"""The Twisted floor: the least a bore server and client on Twisted can do per tunnelled connection.

Not Spore and not for use: no secret, no limits, no TLS, no heartbeats, no
logging, no timeouts.  Plain Twisted protocols, transports and producers,
bore's frames and flow (visitor -> Connection(id) -> a new connection with
Accept(id) -> splice), half-close passed on.  It takes the command line
bench.py gives spore, like bench/floor.py (the same without Twisted), so

    python3 bench/versus_bore.py --spore 'python3 bench/twisted_floor.py'

shows what any Spore built on Twisted's TCP transports could reach on this
machine: the gap between it and floor.py is Twisted's per-connection and
per-event machinery; the gap between it and Spore is Spore.  ``--lean`` adds
the ways Spore gets around some of Twisted's costs (``spore.sending``'s
writes and half-closes at once, ``spore.sockets.tune``'s TCP_NODELAY and
256 KiB reads), so the gap between it and Spore is Spore's own work: its
security, limits, logging, metrics and timeouts.
"""

from __future__ import annotations

import json
import sys
import uuid

from floor import frame, parse_args  # bench/floor.py: the same frames and command line
from twisted.internet import reactor
from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.internet.protocol import ClientFactory, Factory, Protocol
from zope.interface import implementer


def send(transport, data: bytes) -> None:
    transport.write(data)


def finish(transport) -> None:
    transport.loseWriteConnection()


def tune(transport) -> None:
    pass


@implementer(IHalfCloseableProtocol)
class Side(Protocol):
    """One connection of a spliced pair; until spliced, reads NUL-delimited frames."""

    peer: Side | None = None
    buffer = b""
    read_done = False

    def splice(self, other: Side) -> None:
        self.peer, other.peer = other, self
        self.transport.registerProducer(other.transport, True)
        other.transport.registerProducer(self.transport, True)
        for side in (self, other):
            side.transport.resumeProducing()
            if side.buffer:
                send(side.peer.transport, side.buffer)
                side.buffer = b""

    def dataReceived(self, data: bytes) -> None:
        if self.peer is not None:
            return send(self.peer.transport, data)
        self.buffer += data
        while self.peer is None and b"\0" in self.buffer:
            line, self.buffer = self.buffer.split(b"\0", 1)
            self.frameReceived(json.loads(line))  # splice() passes on what follows an Accept

    def frameReceived(self, message) -> None:
        pass

    def readConnectionLost(self) -> None:
        self.read_done = True
        if self.peer is not None:
            self.peer.transport.unregisterProducer()
            finish(self.peer.transport)

    def writeConnectionLost(self) -> None:
        if self.read_done:
            self.transport.loseConnection()

    def connectionLost(self, reason) -> None:
        if self.peer is not None:
            self.peer.peer = None
            self.peer.transport.loseConnection()


def server(args) -> None:
    pending: dict[str, Side] = {}
    tunnel: dict[str, Side] = {}

    class Visitor(Side):
        def connectionMade(self) -> None:
            self.transport.pauseProducing()
            tune(self.transport)
            id = str(uuid.uuid4())
            pending[id] = self
            send(tunnel["control"].transport, frame({"Connection": id}))

    class Control(Side):
        def frameReceived(self, message) -> None:
            if "Hello" in message:
                tunnel["control"] = self
                reactor.listenTCP(args.min_port, Factory.forProtocol(Visitor), backlog=1024, interface=args.bind_addr)
                self.transport.write(frame({"Hello": args.min_port}))
            elif "Accept" in message:
                tune(self.transport)
                self.splice(pending.pop(message["Accept"]))

    factory = Factory.forProtocol(Control)
    factory.noisy = False
    reactor.listenTCP(args.control_port, factory, backlog=1024, interface=args.bind_addr)
    print(f"listening on {args.bind_addr}:{args.control_port}", flush=True)  # what benchmarks wait for
    reactor.run()


def local(args) -> None:
    class Pair(ClientFactory):
        noisy = False

        def __init__(self, protocol) -> None:
            self.protocol = protocol

        def buildProtocol(self, addr):
            return self.protocol

    class Dialled(Side):
        def __init__(self, connected) -> None:
            self.connected_to = connected

        def connectionMade(self) -> None:
            tune(self.transport)
            self.connected_to(self)

    def on_connection(id: str) -> None:
        both: list[Side] = []

        def connected(side: Side) -> None:
            both.append(side)
            if len(both) == 2:
                send(data.transport, frame({"Accept": id}))
                data.splice(service)

        data, service = Dialled(connected), Dialled(connected)
        reactor.connectTCP(args.to, args.control_port, Pair(data))
        reactor.connectTCP(args.local_host, args.local_port, Pair(service))

    class Control(Side):
        def connectionMade(self) -> None:
            self.transport.write(frame({"Hello": args.port}))

        def frameReceived(self, message) -> None:
            if "Hello" in message:
                print(f"listening at {args.to}:{message['Hello']}", flush=True)
            elif "Connection" in message:
                on_connection(message["Connection"])

    reactor.connectTCP(args.to, args.control_port, ClientFactory.forProtocol(Control))
    reactor.run()


def main() -> None:
    global send, finish, tune
    args = parse_args("--lean", "with Spore's ways around Twisted's costs: spore.sending's writes and half-closes "
                      "at once, spore.sockets.tune's TCP_NODELAY and 256 KiB reads")
    if args.lean:
        from spore import sending, sockets

        send, finish = sending.write_now, sending.lose_write_now
        tune = lambda transport: sockets.tune(transport, None, None)
    (server if args.command == "server" else local)(args)
    sys.exit(0)


if __name__ == "__main__":
    main()
