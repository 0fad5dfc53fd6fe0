"""The client's dialling of its per-visitor connections, on a memory reactor."""

from __future__ import annotations

import gc
import weakref

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionRefusedError, DNSLookupError
from twisted.internet.protocol import Protocol
from twisted.internet.testing import MemoryReactor, MemoryReactorClock
from twisted.python.failure import Failure

from spore.dialing import REMEMBER_FOR, RememberingDialer, TCPDialer, tcp_dialer


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


class NameEndpoint:
    """An endpoint to a host name: each connect() waits in ``attempts`` for the test to connect or fail it."""

    def __init__(self) -> None:
        self.attempts: list[tuple[object, Deferred]] = []

    def connect(self, factory):
        self.attempts.append((factory, Deferred()))
        return self.attempts[-1][1]

    def reach(self, address, index=-1):
        factory, made = self.attempts[index]
        protocol = factory.buildProtocol(address)
        made.callback(protocol)
        return protocol


def remembering():
    reactor, endpoint = MemoryReactorClock(), NameEndpoint()
    return reactor, endpoint, RememberingDialer(reactor, endpoint, 3000, timeout=5.0)


def test_a_host_name_is_resolved_first_then_the_address_it_reached_is_dialled_directly():
    reactor, endpoint, dialer = remembering()
    built = []
    dialer.dial(lambda: built.append(Protocol()) or built[-1], built.append)
    assert len(endpoint.attempts) == 1 and reactor.tcpClients == []
    endpoint.reach(IPv6Address("TCP", "::1", 3000))
    assert len(built) == 1
    dialer.dial(Protocol, built.append)
    assert len(endpoint.attempts) == 1
    host, port, _, timeout, _ = reactor.tcpClients[-1]
    assert (host, port, timeout) == ("::1", 3000, 5.0)


def test_the_name_is_resolved_again_once_its_address_is_old():
    reactor, endpoint, dialer = remembering()
    dialer.dial(Protocol, lambda reason: None)
    endpoint.reach(IPv4Address("TCP", "127.0.0.1", 3000))
    reactor.advance(REMEMBER_FOR - 0.1)
    dialer.dial(Protocol, lambda reason: None)
    assert (len(endpoint.attempts), len(reactor.tcpClients)) == (1, 1)
    reactor.advance(0.1)
    dialer.dial(Protocol, lambda reason: None)
    assert (len(endpoint.attempts), len(reactor.tcpClients)) == (2, 1)
    endpoint.reach(IPv4Address("TCP", "10.0.0.7", 3000))
    dialer.dial(Protocol, lambda reason: None)
    assert reactor.tcpClients[-1][0] == "10.0.0.7"


def test_a_remembered_address_that_fails_costs_the_visitor_nothing_but_a_resolution():
    reactor, endpoint, dialer = remembering()
    dialer.dial(Protocol, lambda reason: None)
    endpoint.reach(IPv4Address("TCP", "127.0.0.1", 3000))
    protocol, reasons = Protocol(), []
    dialer.dial(lambda: protocol, reasons.append)
    reactor.tcpClients[-1][2].clientConnectionFailed(None, Failure(ConnectionRefusedError()))
    assert len(endpoint.attempts) == 2 and reasons == []
    assert endpoint.reach(IPv4Address("TCP", "127.0.0.2", 3000)) is protocol
    dialer.dial(Protocol, reasons.append)
    assert reactor.tcpClients[-1][0] == "127.0.0.2"


def test_a_name_that_cannot_be_reached_fails_the_visitor_and_is_not_remembered():
    reactor, endpoint, dialer = remembering()
    reasons = []
    dialer.dial(Protocol, reasons.append)
    endpoint.attempts[0][1].errback(DNSLookupError("no such host"))
    assert reasons[0].check(DNSLookupError)
    dialer.dial(Protocol, reasons.append)
    assert len(endpoint.attempts) == 2 and reactor.tcpClients == []


def test_a_link_local_address_needs_its_interface_and_is_left_to_the_endpoint():
    reactor, endpoint, dialer = remembering()
    dialer.dial(Protocol, lambda reason: None)
    endpoint.reach(IPv6Address("TCP", "fe80::1", 3000, scopeID=2))
    dialer.dial(Protocol, lambda reason: None)
    assert len(endpoint.attempts) == 2 and reactor.tcpClients == []


def test_a_connection_through_the_name_lets_go_of_what_its_callables_held():
    reactor, endpoint, dialer = remembering()
    protocol = Protocol()
    alive, build, failed = callables(protocol)
    dialer.dial(build, failed)
    del build, failed
    assert endpoint.reach(IPv4Address("TCP", "127.0.0.1", 3000)) is protocol
    gc.collect()
    assert alive() is None
