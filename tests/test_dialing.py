"""The client's dialling of its per-visitor connections, on a memory reactor."""

from __future__ import annotations

import gc
import weakref

from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.protocol import Protocol
from twisted.internet.testing import MemoryReactor
from twisted.python.failure import Failure

from spore.dialing import TCPDialer, tcp_dialer


class Held:
    """Something a visitor's callables hold (its Deferreds, in spore.local)."""


def dial(reactor, build, failed):
    TCPDialer(reactor, "127.0.0.1", 3000, timeout=5.0).dial(build, failed)
    host, port, factory, timeout, _ = reactor.tcpClients[-1]
    assert (host, port, timeout) == ("127.0.0.1", 3000, 5.0)
    return factory


def callables(protocol):
    """A ``build`` and a ``failed`` that hold something, and a weak reference to it."""
    held = Held()
    return weakref.ref(held), lambda: (held, protocol)[1], lambda reason: held


def test_a_connection_gets_the_protocol_built_for_it_and_lets_go_of_what_its_callables_held():
    reactor, protocol = MemoryReactor(), Protocol()
    alive, build, failed = callables(protocol)
    factory = dial(reactor, build, failed)
    del build, failed
    assert alive() is not None
    assert factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 3000)) is protocol
    gc.collect()
    # The open connection keeps its factory (through its Connector), not the visitor's state.
    assert alive() is None


def test_a_connection_that_fails_says_why():
    reasons = []
    factory = dial(MemoryReactor(), Protocol, reasons.append)
    reason = Failure(ConnectionRefusedError())
    factory.clientConnectionFailed(None, reason)
    assert reasons == [reason]


def test_only_an_ip_address_is_dialled_directly():
    reactor = MemoryReactor()
    assert isinstance(tcp_dialer(reactor, "127.0.0.1", 1, 1.0), TCPDialer)
    assert isinstance(tcp_dialer(reactor, "::1", 1, 1.0), TCPDialer)
    assert tcp_dialer(reactor, "localhost", 1, 1.0) is None
