"""A listening port takes at most a few connections per turn of the reactor, however many wait."""

from __future__ import annotations

import socket

from twisted.internet.protocol import Factory, Protocol

from spore.accepting import ACCEPTS_PER_TURN, bound_accepts


class Counting(Factory):
    def __init__(self) -> None:
        self.built = 0

    def buildProtocol(self, addr):
        self.built += 1
        return Protocol()


def waiting_connections(port, count: int) -> list[socket.socket]:
    """``count`` connections the kernel has completed and queued for ``port`` to accept."""
    return [socket.create_connection(("127.0.0.1", port.getHost().port), timeout=5) for _ in range(count)]


def accept_once(reactor, bounded: bool) -> int:
    factory = Counting()
    port = reactor.listenTCP(0, factory, backlog=128, interface="127.0.0.1")
    if bounded:
        bound_accepts(port)
    connections = waiting_connections(port, 3 * ACCEPTS_PER_TURN)
    try:
        # The reactor does not run in between: this is one turn's worth.
        port.numberAccepts = 1000  # as a long flood would have grown it
        port.doRead()
        return factory.built
    finally:
        for conn in connections:
            conn.close()
        port.stopListening()


def test_a_bounded_port_accepts_a_few_per_turn(reactor):
    assert accept_once(reactor, bounded=True) == ACCEPTS_PER_TURN


def test_twisted_still_accepts_as_many_as_number_accepts_says(reactor):
    # If this fails, Twisted changed how tcp.Port batches its accepts, and
    # spore.accepting must follow.
    assert accept_once(reactor, bounded=False) == 3 * ACCEPTS_PER_TURN


def test_other_ports_are_left_alone():
    class NotTCP:
        def doRead(self):
            return "unchanged"

    port = NotTCP()
    bound_accepts(port)
    assert "doRead" not in vars(port)
