"""Who may connect: the allow/deny rules, the per-address limit, and their factories."""

from __future__ import annotations

import itertools
from ipaddress import ip_address, ip_network

import pytest
import pytest_twisted
from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.defer import Deferred, DeferredQueue
from twisted.internet.endpoints import (
    TCP4ClientEndpoint,
    TCP4ServerEndpoint,
    connectProtocol,
)
from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.ssl import CertificateOptions
from twisted.protocols.policies import WrappingFactory
from twisted.protocols.tls import TLSMemoryBIOFactory, TLSMemoryBIOProtocol
from zope.interface import implementer

from spore.access import AccessRules, normalize, parse_networks
from spore.policies import AddressFilter, CountedProtocol, LimitPerPeer, PeerLimit
from tests.fakes import Transport

TIMEOUT = 5

# The rules, without Twisted.


def admitted(rules, hosts):
    return [host for host in hosts if rules.admits(host)]


def test_allowed_networks_with_everything_else_denied():
    rules = AccessRules.parse("10.0.0.0/8,192.168.0.0/16", "0.0.0.0/0")
    hosts = ["10.1.2.3", "192.168.7.7", "172.16.0.1", "8.8.8.8", "11.0.0.1"]
    assert admitted(rules, hosts) == ["10.1.2.3", "192.168.7.7"]


def test_a_denied_address_inside_an_allowed_network():
    rules = AccessRules.parse("10.0.0.0/8", "10.1.2.3")
    assert admitted(rules, ["10.1.2.3", "10.9.9.9", "10.1.2.4", "11.0.0.1"]) == ["10.9.9.9", "10.1.2.4"]


def test_without_allow_entries_an_unmatched_address_is_admitted():
    rules = AccessRules.parse(None, "10.0.0.0/8 2001:db8::/32")
    assert admitted(rules, ["10.0.0.1", "192.0.2.1", "2001:db8::1", "2001:db9::1"]) == ["192.0.2.1", "2001:db9::1"]


def test_with_allow_entries_an_unmatched_address_is_refused():
    rules = AccessRules.parse("10.0.0.0/8", None)
    assert admitted(rules, ["10.0.0.1", "192.0.2.1", "::1"]) == ["10.0.0.1"]


@pytest.mark.parametrize("allow, deny", [("10.0.0.0/8", "10.0.0.0/8"), ("10.1.2.3", "10.1.2.3/32"), ("::/0", "::/0")])
def test_deny_wins_between_entries_of_the_same_length(allow, deny):
    rules = AccessRules.parse(allow, deny)
    assert not rules.admits("10.1.2.3" if "." in allow else "2001:db8::1")


def test_a_more_specific_allow_beats_a_deny():
    rules = AccessRules.parse("10.1.0.0/16", "10.0.0.0/8")
    assert admitted(rules, ["10.1.0.1", "10.2.0.1", "192.0.2.1"]) == ["10.1.0.1"]


def test_ipv6_networks():
    rules = AccessRules.parse("2001:db8::/32", "::/0, 2001:db8:bad::/48")
    hosts = ["2001:db8::1", "2001:db8:bad::1", "2001:db9::1", "10.0.0.1"]
    assert admitted(rules, hosts) == ["2001:db8::1"]


def test_ipv4_mapped_clients_are_matched_as_ipv4():
    rules = AccessRules.parse("127.0.0.0/8", "127.0.0.9")
    assert admitted(rules, ["::ffff:127.0.0.2", "::ffff:127.0.0.9", "::ffff:10.0.0.1"]) == ["::ffff:127.0.0.2"]


def test_ipv4_mapped_entries_are_matched_as_ipv4():
    rules = AccessRules.parse(None, "::ffff:10.0.0.0/104, ::ffff:192.0.2.1")
    assert rules.deny == (ip_network("10.0.0.0/8"), ip_network("192.0.2.1/32"))
    assert admitted(rules, ["10.0.0.1", "::ffff:10.0.0.1", "192.0.2.1", "192.0.2.2"]) == ["192.0.2.2"]


def test_an_ipv6_scope_id_is_tolerated():
    assert AccessRules.parse("fe80::/64", None).admits("fe80::1%eth0")
    assert not AccessRules.parse(None, "fe80::1").admits("fe80::1%eth0")


def test_a_peer_that_is_not_an_ip_address_is_local_and_admitted():
    assert AccessRules.parse("10.0.0.0/8", "0.0.0.0/0, ::/0").admits("/run/spore.sock")


def test_normalize():
    assert normalize("::ffff:127.0.0.2") == ip_address("127.0.0.2")
    assert normalize("fe80::1%eth0") == ip_address("fe80::1")
    assert normalize("2001:db8::1") == ip_address("2001:db8::1")
    assert normalize("/run/spore.sock") is None


@pytest.mark.parametrize(
    "spec",
    [
        "10.0.0.0/8, 192.168.0.0/16",
        "10.0.0.0/8 192.168.0.0/16",
        " 10.0.0.0/8,,\t192.168.0.0/16\n",
        ["10.0.0.0/8", "192.168.0.0/16"],
        ["10.0.0.0/8, 192.168.0.0/16"],
    ],
)
def test_entries_are_separated_by_commas_or_spaces_or_given_as_a_list(spec):
    assert parse_networks(spec, "--allow") == (ip_network("10.0.0.0/8"), ip_network("192.168.0.0/16"))


@pytest.mark.parametrize("spec", [None, "", " , ", []])
def test_no_entries_no_rules(spec):
    rules = AccessRules.parse(spec, spec)
    assert rules == AccessRules() and not rules.restricts
    assert rules.admits("192.0.2.1")


def test_any_entry_restricts():
    assert AccessRules.parse("::1", None).restricts and AccessRules.parse(None, "::1").restricts


def test_host_bits_are_forgiven():
    assert parse_networks("10.0.0.1/8", "--allow") == (ip_network("10.0.0.0/8"),)


@pytest.mark.parametrize("entry", ["10.0.0.300", "10.0.0.0/33", "example.com", "2001:db8::g", "10.0.0.0/8/8"])
def test_a_malformed_entry_is_named_with_its_option(entry):
    with pytest.raises(ValueError) as allow:
        AccessRules.parse(f"10.0.0.0/8,{entry}", None)
    assert str(allow.value) == f"--allow: {entry!r} is not an IP address or network"
    with pytest.raises(ValueError) as deny:
        AccessRules.parse(None, ["192.0.2.1", entry])
    assert str(deny.value) == f"--deny: {entry!r} is not an IP address or network"


def test_a_config_list_item_that_is_not_a_string_is_an_error():
    with pytest.raises(ValueError, match=r"^--deny: 42 is not an IP address or network$"):
        AccessRules.parse(None, ["10.0.0.0/8", 42])


# The factories, on fake transports.

_ports = itertools.count(40000)


class Greeter(Protocol):
    """Says hello, and remembers that it was closed."""

    closed = False

    def connectionMade(self):
        self.transport.write(b"hello\n")

    def connectionLost(self, reason):
        self.closed = True


@implementer(IHalfCloseableProtocol)
class HalfCloseableGreeter(Greeter):
    read_done = False

    def readConnectionLost(self):
        self.read_done = True

    def writeConnectionLost(self):
        pass


class Counting(Factory):
    """Builds Greeters and keeps them, so a test can tell what got through."""

    def __init__(self, protocol=Greeter):
        self.built = []
        self.protocol = protocol

    def buildProtocol(self, addr):
        self.built.append(self.protocol())
        return self.built[-1]


class Refusing(Factory):
    def buildProtocol(self, addr):
        return None


def connect(factory, host="127.0.0.2"):
    """Connect a peer at ``host``: its (protocol, transport), or (None, None) if refused."""
    address = (IPv6Address if ":" in host else IPv4Address)("TCP", host, next(_ports))
    protocol = factory.buildProtocol(address)
    if protocol is None:
        return None, None
    transport = Transport(peerAddress=address)
    protocol.makeConnection(transport)
    return protocol, transport


def close(protocol):
    protocol.transport.loseConnection()
    protocol.connectionLost(None)


def test_the_filter_refuses_without_building_and_counts():
    inner = Counting()
    factory = AddressFilter(inner, AccessRules.parse("127.0.0.0/8", "127.0.0.3"))
    assert connect(factory, "127.0.0.3") == (None, None)
    assert connect(factory, "192.0.2.1") == (None, None)
    assert inner.built == [] and factory.refused == 2


def test_the_filter_hands_an_admitted_connection_to_the_inner_factory_as_it_is():
    inner = Counting()
    factory = AddressFilter(inner, AccessRules.parse("127.0.0.0/8", "127.0.0.3"))
    protocol, transport = connect(factory, "127.0.0.2")
    assert protocol is inner.built[0] and transport.value() == b"hello\n"
    protocol, _ = connect(factory, "::ffff:127.0.0.4")
    assert protocol is inner.built[1] and factory.refused == 0


def test_the_filter_admits_a_unix_socket_peer():
    inner = Counting()
    factory = AddressFilter(inner, AccessRules.parse("10.0.0.0/8", "0.0.0.0/0"))
    assert factory.buildProtocol(UNIXAddress(None)) is not None


def test_the_filter_passes_a_refusal_from_inside_on():
    factory = AddressFilter(Refusing(), AccessRules())
    assert connect(factory) == (None, None)


def test_the_limit_refuses_the_connection_past_it_and_frees_a_slot_on_close():
    inner, limit = Counting(), PeerLimit(2)
    factory = LimitPerPeer(inner, limit)
    first, transport = connect(factory, "127.0.0.2")
    assert isinstance(first, CountedProtocol) and transport.value() == b"hello\n"
    connect(factory, "127.0.0.2")
    assert connect(factory, "127.0.0.2") == (None, None)
    assert len(inner.built) == 2 and limit.refused == 1
    assert connect(factory, "127.0.0.3")[0] is not None
    assert limit.counts == {"127.0.0.2": 2, "127.0.0.3": 1}

    close(first)
    assert inner.built[0].closed and limit.counts == {"127.0.0.2": 1, "127.0.0.3": 1}
    assert connect(factory, "127.0.0.2")[0] is not None


def test_the_control_port_and_the_public_ports_share_one_budget():
    limit = PeerLimit(3)
    control, public, other_public = (LimitPerPeer(Counting(), limit) for _ in range(3))
    for factory in (control, public, other_public):
        assert connect(factory, "127.0.0.2")[0] is not None
    for factory in (control, public, other_public):
        assert connect(factory, "127.0.0.2") == (None, None)
    assert limit.refused == 3 and limit.counts == {"127.0.0.2": 3}


def test_an_ipv4_mapped_peer_shares_the_budget_of_its_ipv4_address():
    limit = PeerLimit(1)
    factory = LimitPerPeer(Counting(), limit)
    connect(factory, "::ffff:127.0.0.2")
    assert connect(factory, "127.0.0.2") == (None, None)
    assert limit.counts == {"127.0.0.2": 1}


def test_a_refusal_from_inside_gives_the_slot_back():
    limit = PeerLimit(1)
    assert connect(LimitPerPeer(Refusing(), limit)) == (None, None)
    assert limit.counts == {} and limit.refused == 0


def test_a_unix_socket_peer_is_not_counted():
    inner, limit = Counting(), PeerLimit(1)
    factory = LimitPerPeer(inner, limit)
    assert factory.buildProtocol(UNIXAddress(None)) is not None
    assert factory.buildProtocol(UNIXAddress(None)) is inner.built[1]
    assert limit.counts == {}


def test_a_limit_below_one_is_an_error():
    with pytest.raises(ValueError):
        PeerLimit(0)


def test_stop_counting_gives_the_slot_back_once():
    inner, limit = Counting(), PeerLimit(1)
    factory = LimitPerPeer(inner, limit)
    counted, _ = connect(factory)
    stop_counting = inner.built[0].transport.stop_counting
    stop_counting()
    stop_counting()
    assert limit.counts == {}
    connect(factory)
    close(counted)
    assert limit.counts == {"127.0.0.2": 1}
    assert connect(factory) == (None, None)


def test_stop_counting_is_absent_without_a_limit():
    inner = Counting()
    connect(AddressFilter(inner, AccessRules()))
    assert getattr(inner.built[0].transport, "stop_counting", None) is None


def tls_around(factory):
    # No certificate: the server's TLS layer needs one only once a ClientHello comes.
    return TLSMemoryBIOFactory(CertificateOptions(), False, factory)


@pytest.mark.parametrize("wrap", [tls_around, WrappingFactory, lambda f: WrappingFactory(tls_around(f))])
def test_stop_counting_is_found_through_other_wrappers(wrap):
    inner, limit = Counting(), PeerLimit(1)
    factory = AddressFilter(LimitPerPeer(wrap(inner), limit), AccessRules.parse("127.0.0.0/8", None))
    counted, _ = connect(factory)
    greeter = inner.built[0]
    assert greeter.transport is not counted
    if wrap is tls_around:
        assert isinstance(greeter.transport, TLSMemoryBIOProtocol)
    greeter.transport.stop_counting()
    assert limit.counts == {}
    close(counted)
    assert greeter.closed and limit.counts == {}


def test_a_half_close_reaches_a_protocol_that_takes_one():
    inner = Counting(HalfCloseableGreeter)
    counted, _ = connect(LimitPerPeer(inner, PeerLimit(1)))
    half_closeable = IHalfCloseableProtocol(counted, None)
    assert half_closeable is not None
    half_closeable.readConnectionLost()
    assert inner.built[0].read_done and not inner.built[0].closed


def test_a_protocol_that_takes_no_half_close_is_not_offered_one():
    counted, _ = connect(LimitPerPeer(Counting(), PeerLimit(1)))
    assert IHalfCloseableProtocol(counted, None) is None


# Real sockets from several loopback addresses.


@implementer(IHalfCloseableProtocol)
class Visitor(Protocol):
    """A client that keeps what it receives and says goodbye with a FIN."""

    def __init__(self):
        self.received = b""
        self.greeted, self.closed = Deferred(), Deferred()

    def dataReceived(self, data):
        self.received += data
        if not self.greeted.called:
            self.greeted.callback(self.received)

    def readConnectionLost(self):
        self.transport.loseConnection()

    def writeConnectionLost(self):
        pass

    def connectionLost(self, reason):
        self.closed.callback(self.received)


@implementer(IHalfCloseableProtocol)
class Answering(Protocol):
    """Greets, answers a FIN with goodbye, and reports its close on ``lost``."""

    def __init__(self, lost):
        self.lost = lost

    def connectionMade(self):
        self.transport.write(b"hello\n")

    def readConnectionLost(self):
        self.transport.write(b"bye\n")
        self.transport.loseConnection()

    def writeConnectionLost(self):
        pass

    def connectionLost(self, reason):
        self.lost.put(self.transport.getPeer().host)


@pytest_twisted.ensureDeferred
async def test_refused_connections_get_closed_without_a_byte(reactor):
    lost = DeferredQueue()
    limit = PeerLimit(1)
    factory = AddressFilter(
        LimitPerPeer(Factory.forProtocol(lambda: Answering(lost)), limit),
        AccessRules.parse("127.0.0.0/8", "127.0.0.4"),
    )
    port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(factory)

    async def visit(source):
        endpoint = TCP4ClientEndpoint(
            reactor, "127.0.0.1", port.getHost().port, timeout=TIMEOUT, bindAddress=(source, 0)
        )
        return await connectProtocol(endpoint, Visitor()).addTimeout(TIMEOUT, reactor)

    try:
        denied = await visit("127.0.0.4")
        assert await denied.closed.addTimeout(TIMEOUT, reactor) == b""
        assert factory.refused == 1

        first = await visit("127.0.0.2")
        assert await first.greeted.addTimeout(TIMEOUT, reactor) == b"hello\n"
        over_the_limit = await visit("127.0.0.2")
        assert await over_the_limit.closed.addTimeout(TIMEOUT, reactor) == b""
        assert limit.refused == 1
        other = await visit("127.0.0.3")
        assert await other.greeted.addTimeout(TIMEOUT, reactor) == b"hello\n"

        # A FIN passes through the wrappers, and the close frees the slot.
        first.transport.loseWriteConnection()
        assert await first.closed.addTimeout(TIMEOUT, reactor) == b"hello\nbye\n"
        assert await lost.get().addTimeout(TIMEOUT, reactor) == "127.0.0.2"
        again = await visit("127.0.0.2")
        assert await again.greeted.addTimeout(TIMEOUT, reactor) == b"hello\n"
        assert limit.counts == {"127.0.0.2": 1, "127.0.0.3": 1}
        for visitor in (other, again):
            visitor.transport.loseConnection()
            await visitor.closed.addTimeout(TIMEOUT, reactor)
    finally:
        await port.stopListening()
