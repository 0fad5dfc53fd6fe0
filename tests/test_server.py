"""The server's control-port protocol on a fake network and clock."""

from __future__ import annotations

import errno
import uuid

import pytest

from spore import auth
from spore.messages import Accept, Authenticate, Hello, encode
from spore.server import RANDOM_PORT_TRIES, ServerFactory
from spore.settings import ServerSettings
from tests.fakes import TunnelReactor, connect
from tests.replay import HEARTBEAT, frames


def make_server(reactor=None, **settings):
    reactor = reactor or TunnelReactor()
    settings.setdefault("min_port", 20000)
    settings.setdefault("max_port", 20100)
    return ServerFactory(ServerSettings(**settings), reactor), reactor


def open_tunnel(server, port=20050):
    control, transport = connect(server)
    control.dataReceived(encode(Hello(port)))
    assert frames(transport.value())[0] == encode(Hello(port))
    return control, transport


def shed_count(server, reason: str) -> float | None:
    """How many connections the server shed for ``reason``, by its metrics."""
    return server.metrics.registry.get_sample_value("spore_connections_shed_total", {"reason": reason})


def announced_ids(transport):
    return [uuid.UUID(f[15:-3].decode()) for f in frames(transport.value()) if f.startswith(b'{"Connection"')]


def test_a_visitor_is_held_unread_and_announced():
    server, reactor = make_server()
    _, control = open_tunnel(server)
    visitor, visitor_transport = reactor.visit(20050)
    assert visitor_transport.producerState == "paused"
    assert announced_ids(control) == [visitor.id]
    assert len(server.pending) == 1


def test_an_unclaimed_visitor_is_closed_after_ten_seconds():
    server, reactor = make_server()
    open_tunnel(server)
    _, visitor = reactor.visit(20050)
    reactor.advance(9.999)
    assert not visitor.disconnecting
    reactor.advance(0.001)
    assert visitor.disconnecting
    assert len(server.pending) == 0


def test_a_visitor_is_claimed_once_and_bytes_after_accept_are_forwarded():
    server, reactor = make_server()
    _, control = open_tunnel(server)
    visitor, visitor_transport = reactor.visit(20050)
    (id,) = announced_ids(control)

    data, data_transport = connect(server)
    data.dataReceived(encode(Accept(id)) + b"GET / HTTP/1.0\r\n")
    assert visitor_transport.value() == b"GET / HTTP/1.0\r\n"
    assert visitor_transport.producerState == "producing"
    assert visitor_transport.producer is data_transport and data_transport.producer is visitor_transport
    visitor.dataReceived(b"HTTP/1.0 200 OK\r\n")
    assert data_transport.value() == b"HTTP/1.0 200 OK\r\n"

    again, again_transport = connect(server)
    again.dataReceived(encode(Accept(id)))
    assert again_transport.disconnecting and again_transport.value() == b""


def test_the_claim_survives_past_ten_seconds():
    server, reactor = make_server()
    _, control = open_tunnel(server)
    _, visitor_transport = reactor.visit(20050)
    (id,) = announced_ids(control)
    connect(server)[0].dataReceived(encode(Accept(id)))
    reactor.advance(60)
    assert not visitor_transport.disconnecting


def test_heartbeats_every_interval_until_the_control_connection_closes():
    server, reactor = make_server(heartbeat_interval=0.5)
    control, transport = open_tunnel(server)
    assert transport.value().count(HEARTBEAT) == 1
    for beats in range(2, 6):
        reactor.advance(0.5)
        assert transport.value().count(HEARTBEAT) == beats
    transport.loseConnection()
    control.connectionLost(None)
    reactor.advance(5)
    assert transport.value().count(HEARTBEAT) == 5
    assert reactor.listening == {}


@pytest.mark.parametrize("secrets", [(), ("s3cret",)])
def test_a_silent_client_is_closed_after_three_seconds(secrets):
    server, reactor = make_server(secrets=secrets)
    _, transport = connect(server)
    reactor.advance(2.999)
    assert not transport.disconnecting
    reactor.advance(0.001)
    assert transport.disconnecting
    assert frames(transport.value())[-1] == b'{"Error":"timed out waiting for initial message"}\0'


def test_after_authenticating_a_client_has_three_more_seconds():
    server, reactor = make_server(secrets=("old", "s3cret"))
    client, transport = connect(server)
    challenge = uuid.UUID(frames(transport.value())[0][14:-3].decode())
    reactor.advance(2.5)
    client.dataReceived(encode(Authenticate(auth.answer("s3cret", challenge))))
    reactor.advance(2.9)
    assert not transport.disconnecting
    client.dataReceived(encode(Hello(20050)))
    reactor.advance(10)
    assert not transport.disconnecting
    assert encode(Hello(20050)) in transport.value()


def test_any_of_several_secrets_authenticates():
    server, _ = make_server(secrets=("first", "second"))
    for secret in ("first", "second"):
        client, transport = connect(server)
        challenge = uuid.UUID(frames(transport.value())[0][14:-3].decode())
        client.dataReceived(encode(Authenticate(auth.answer(secret, challenge))) + encode(Hello(0)))
        assert frames(transport.value())[1].startswith(b'{"Hello":')


def test_hello_zero_picks_a_port_in_the_range():
    server, reactor = make_server(min_port=30000, max_port=30009)
    ports = set()
    for _ in range(10):
        client, transport = connect(server)
        client.dataReceived(encode(Hello(0)))
        ports.add(int(frames(transport.value())[0][9:-2]))
    assert ports <= set(range(30000, 30010))
    assert ports == set(reactor.listening)


def test_hello_zero_gives_up_after_150_tries():
    class Counting(TunnelReactor):
        tries = 0

        def listenTCP(self, *args, **kwargs):
            self.tries += 1
            return super().listenTCP(*args, **kwargs)

    server, reactor = make_server(Counting(taken=set(range(20000, 20101))))
    client, transport = connect(server)
    client.dataReceived(encode(Hello(0)))
    assert reactor.tries == RANDOM_PORT_TRIES
    assert transport.value() == b'{"Error":"failed to find an available port"}\0'
    assert transport.disconnecting


@pytest.mark.parametrize(
    "code, text", [(errno.EADDRINUSE, "port already in use"), (errno.EACCES, "permission denied"), (errno.EADDRNOTAVAIL, "failed to bind to port")]
)
def test_bind_failures_get_bores_error_texts(code, text):
    from twisted.internet.error import CannotListenError

    class Refusing(TunnelReactor):
        def listenTCP(self, port, factory, backlog=50, interface=""):
            raise CannotListenError(interface, port, OSError(code, "refused"))

    server, _ = make_server(Refusing())
    client, transport = connect(server)
    client.dataReceived(encode(Hello(20050)))
    assert transport.value() == encode_error(text)


def encode_error(text):
    return b'{"Error":"' + text.encode() + b'"}\0'


def test_a_tunnel_closes_when_its_client_half_closes():
    server, reactor = make_server()
    control, transport = open_tunnel(server)
    control.readConnectionLost()
    assert transport.disconnecting
    control.connectionLost(None)
    assert reactor.listening == {}


def test_a_message_after_hello_closes_the_tunnel():
    server, reactor = make_server()
    control, transport = open_tunnel(server)
    control.dataReceived(encode(Hello(20051)))
    assert transport.disconnecting
    assert frames(transport.value())[-1] == encode_error("unexpected message")


def test_one_source_may_fill_a_tunnels_pending_table_and_then_displaces_its_own_oldest():
    server, reactor = make_server(max_pending_per_tunnel=4)
    _, control = open_tunnel(server)
    visitors = [reactor.visit(20050, "127.0.0.2")[1] for _ in range(4)]
    assert not any(t.disconnecting for t in visitors)
    # The window: the client is told of half of them; the others wait their turn.
    assert len(announced_ids(control)) == 2
    newest = reactor.visit(20050, "127.0.0.2")[1]
    assert not newest.disconnecting
    assert [t.disconnecting for t in visitors] == [False, False, True, False]  # the oldest not yet announced
    # Another source's visitor takes the place of the heaviest source's oldest waiting one.
    assert not reactor.visit(20050, "127.0.0.3")[1].disconnecting
    assert visitors[3].disconnecting
    # Once one is claimed, there is room again.
    connect(server)[0].dataReceived(encode(Accept(announced_ids(control)[0])))
    assert not reactor.visit(20050, "127.0.0.4")[1].disconnecting
    assert shed_count(server, "oldest_visitor") == 2


def test_a_full_pending_table_sheds_the_oldest_visitor_of_the_busiest_source():
    server, reactor = make_server(max_pending_per_tunnel=16)
    open_tunnel(server)
    # Eight sources fill it, two visitors each; the ninth's visitor gets in.
    visitors = {f"127.0.0.{n}": [reactor.visit(20050, f"127.0.0.{n}")[1] for _ in range(2)] for n in range(2, 10)}
    newcomer = reactor.visit(20050, "127.0.0.100")[1]
    assert not newcomer.disconnecting
    shed = [t for ts in visitors.values() for t in ts if t.disconnecting]
    # The oldest of those holding the most, among those its client was not told of yet.
    assert shed == [visitors["127.0.0.6"][0]]
    assert len(server.pending) == 16
    assert shed_count(server, "oldest_visitor") == 1


def test_an_expired_or_departed_visitor_frees_its_pending_place():
    server, reactor = make_server(max_pending_per_tunnel=1)
    open_tunnel(server)
    visitor, _ = reactor.visit(20050)
    reactor.advance(10)
    assert not reactor.visit(20050)[1].disconnecting
    reactor.advance(10)
    visitor, _ = reactor.visit(20050)
    visitor.connectionLost(None)
    assert len(server.pending) == 0
    assert not reactor.visit(20050)[1].disconnecting


def test_tunnels_per_address_are_limited():
    server, reactor = make_server(max_tunnels_per_ip=2)
    first, _ = open_tunnel(server, 20001)
    open_tunnel(server, 20002)
    client, transport = connect(server)
    client.dataReceived(encode(Hello(20003)))
    assert transport.value() == encode_error("too many tunnels from this address")
    client.connectionLost(None)
    first.connectionLost(None)
    open_tunnel(server, 20003)


def test_one_source_holds_at_most_an_eighth_of_the_handshake_slots():
    server, reactor = make_server(max_handshakes=16, secrets=("s3cret",))
    (first, first_transport), (second, second_transport) = [connect(server, "127.0.0.2") for _ in range(2)]
    second.dataReceived(encode(Authenticate(auth.answer("s3cret", challenge_of(second_transport)))))
    # A third displaces the one of the two that has not got anywhere.
    _, third = connect(server, "127.0.0.2")
    assert first_transport.disconnecting and not second_transport.disconnecting and not third.disconnecting
    assert server.admission.held_by("127.0.0.2") == 2
    assert not connect(server, "127.0.0.3")[1].disconnecting
    # A connection that failed counts until it is gone, and is the first displaced.
    first.connectionLost(None)
    second.dataReceived(b"garbage\0")
    assert server.admission.held_by("127.0.0.2") == 2
    connect(server, "127.0.0.2")
    assert second_transport.disconnected and not third.disconnecting
    assert shed_count(server, "stalled_handshake") == 2


def test_an_ipv6_source_is_its_64():
    server, reactor = make_server(max_handshakes=16, secrets=("s3cret",))
    admitted = [connect(server, f"2001:db8::{n}")[1] for n in range(1, 3)]
    assert not any(t.disconnecting for t in admitted)
    connect(server, "2001:db8::ffff:1")
    assert [t.disconnecting for t in admitted] == [True, False]
    connect(server, "2001:db8:0:1::1")
    assert not admitted[1].disconnecting


def challenge_of(transport) -> uuid.UUID:
    return uuid.UUID(frames(transport.value())[0][14:-3].decode())


def test_a_full_control_port_sheds_a_stalled_handshake_not_an_advancing_one():
    server, reactor = make_server(max_handshakes=16, secrets=("s3cret",))
    # The first to arrive authenticates: it is advancing, and is kept.
    advancing, advancing_transport = connect(server, "127.0.0.2")
    stalled = [connect(server, "127.0.0.2")[1]]
    stalled += [connect(server, f"127.0.0.{n}")[1] for n in range(3, 10) for _ in range(2)]
    advancing.dataReceived(encode(Authenticate(auth.answer("s3cret", challenge_of(advancing_transport)))))
    assert len(server.admission) == 16

    newcomers = [connect(server, f"127.0.1.{n}")[1] for n in range(1, 9)]
    assert not any(t.disconnecting for t in newcomers)
    assert not advancing_transport.disconnecting
    # Each newcomer shed one of the longest-stalled from a source holding two.
    shed = [t for t in stalled if t.disconnecting]
    assert shed == [stalled[0]] + stalled[1:15:2]
    assert shed_count(server, "stalled_handshake") == 8


def test_a_tunnel_owner_is_owed_a_slot_for_each_visitor_it_was_told_of():
    server, reactor = make_server(max_handshakes=32)  # a share of 4; the client is told of 4 at a time
    _, control = open_tunnel(server)
    for n in range(6):
        reactor.visit(20050, f"127.0.0.{n + 2}")
    assert len(announced_ids(control)) == 4
    # Its share, and one slot more per announced visitor.
    data = [connect(server) for _ in range(8)]
    assert not any(t.disconnecting for _, t in data)
    _, extra = connect(server)
    assert data[0][1].disconnecting and not extra.disconnecting
    # Claiming its visitors, data connections leave the table, and the address is owed no more for them.
    for (protocol, _), id in zip(data[1:5], announced_ids(control)):
        protocol.dataReceived(encode(Accept(id)))
    assert server.admission.held_by("127.0.0.1") == 4
    assert len(announced_ids(control)) == 6 and server.owed("127.0.0.1") == 2


def test_a_failed_connection_that_cannot_flush_is_aborted():
    server, reactor = make_server()
    client, transport = connect(server)
    client.dataReceived(b"garbage\0")
    assert transport.disconnecting
    reactor.advance(3)
    assert transport.disconnected


def test_an_unexpected_failure_while_opening_a_tunnel_is_told_and_closes():
    class Broken(TunnelReactor):
        def listenTCP(self, *args, **kwargs):
            raise RuntimeError("something nobody foresaw")

    server, _ = make_server(Broken())
    client, transport = connect(server)
    client.dataReceived(encode(Hello(20050)))
    assert transport.value() == encode_error("internal server error") and transport.disconnecting


def test_a_client_that_trickles_a_byte_a_second_is_closed_at_three_seconds():
    server, reactor = make_server(secrets=("s3cret",))
    client, transport = connect(server)
    for byte in b'{"Authenticate":"':
        if transport.disconnecting:
            break
        client.dataReceived(bytes([byte]))
        reactor.advance(1)
    assert transport.disconnecting and reactor.seconds() == 3
    assert frames(transport.value())[-1] == encode_error("timed out waiting for initial message")


def test_the_client_is_told_of_half_as_many_visitors_as_may_wait_and_of_the_rest_in_turn():
    server, reactor = make_server(max_pending_per_tunnel=16)
    _, control = open_tunnel(server)
    [reactor.visit(20050, f"127.0.0.{n}") for n in range(2, 10)]  # 8: the window is full
    assert len(announced_ids(control)) == 8
    # Two sources with more open, then one real visitor: it goes next.
    held = [reactor.visit(20050, f"127.0.0.{n}") for n in (2, 3)]
    real, _ = reactor.visit(20050, "127.0.0.100")
    assert len(announced_ids(control)) == 8 and len(server.pending) == 11
    connect(server)[0].dataReceived(encode(Accept(announced_ids(control)[0])))
    assert announced_ids(control)[-1] == real.id
    # A visitor that leaves before its turn is never announced.
    held[1][0].connectionLost(None)
    connect(server)[0].dataReceived(encode(Accept(announced_ids(control)[1])))
    assert announced_ids(control)[-1] == held[0][0].id
    assert held[1][0].id not in announced_ids(control)


def test_a_full_pending_table_sheds_from_the_source_with_the_most_connections_open_on_the_tunnel():
    server, reactor = make_server(max_pending_per_tunnel=16)
    _, control = open_tunnel(server)
    # 127.0.0.17 has a visitor being forwarded already, and one waiting.
    forwarded, _ = reactor.visit(20050, "127.0.0.17")
    connect(server)[0].dataReceived(encode(Accept(forwarded.id)))
    waiting = {f"127.0.0.{n}": reactor.visit(20050, f"127.0.0.{n}")[1] for n in range(2, 18)}
    assert len(server.pending) == 16
    reactor.visit(20050, "127.0.0.100")
    assert [source for source, t in waiting.items() if t.disconnecting] == ["127.0.0.17"]


def test_a_tunnel_past_its_share_of_the_open_files_leaves_room_for_the_others():
    server, reactor = make_server(max_pending_per_tunnel=1000, max_handshakes=64)
    # (0.9 x 600 - 64 reserved - 64 handshakes - 2 x 3 tunnels) / 2 files = 203 visitors; 67 each
    server.file_limit = 600
    for port in (20001, 20002, 20003):
        open_tunnel(server, port)
    visitors = [reactor.visit(20001, f"127.0.{n // 200}.{n % 200 + 2}") for n in range(203 - 2 * 32)]
    assert all(protocol is not None for protocol, _ in visitors)
    # The others keep room for 32 more each.
    assert reactor.visit(20001) == (None, None)
    assert server.metrics.registry.get_sample_value("spore_connections_refused_total", {"reason": "tunnel_share"}) == 1
    for _ in range(32):
        assert reactor.visit(20002)[0] is not None
    # Once enough of its own have gone to leave the others their room, it gets more again.
    assert reactor.visit(20001) == (None, None)
    for protocol, _ in visitors[:40]:
        protocol.connectionLost(None)
    assert reactor.visit(20001)[0] is not None
    assert reactor.visit(20003)[0] is not None
