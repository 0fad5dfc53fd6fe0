"""Named secrets and reserved ports: the rules (spore.roster, spore.reservations) and the server keeping them."""

from __future__ import annotations

import json
import random
import uuid
from collections import Counter

import pytest
from twisted.internet.error import ConnectionDone
from twisted.python.failure import Failure

from spore import auth
from spore.messages import PORT_RESERVED, SECRET_WITHDRAWN, Accept, Authenticate, Error, Hello, encode
from spore.reservations import Reservations, parse_ports
from spore.roster import Identity, NamedClient, Roster, RosterError, read_clients
from spore.server import ServerFactory
from spore.settings import ServerSettings
from tests.fakes import TunnelReactor, connect
from tests.replay import HEARTBEAT, frames

ALICE = NamedClient("alice", "alice's secret", ((20010, 20010), (20020, 20029)))
BOB = NamedClient("bob", "bob's secret")


# The rules

@pytest.mark.parametrize("value, expected", [
    (20345, (20345, 20345)), ("20345", (20345, 20345)), ("21000-21009", (21000, 21009)), (" 1-65535 ", (1, 65535)),
])
def test_ports_and_ranges_are_read(value, expected):
    assert parse_ports(value) == expected


@pytest.mark.parametrize("value", [0, 65536, "21009-21000", "http", "1-", True, 1.5, None, "-5"])
def test_anything_else_is_not_a_port(value):
    with pytest.raises(ValueError):
        parse_ports(value)


def test_a_reserved_port_has_one_owner():
    reservations = Reservations({"alice": [(20010, 20010), (20020, 20029)], "bob": [(20030, 20030)]})
    assert [reservations.owner(p) for p in (20009, 20010, 20011, 20019, 20020, 20029, 20030, 20031)] == [
        None, "alice", None, None, "alice", "alice", "bob", None
    ]
    assert reservations.held_by("alice") == [(20010, 20010), (20020, 20029)]


@pytest.mark.parametrize("ranges, message", [
    ({"alice": [(20000, 20010)], "bob": [(20010, 20020)]}, "port 20010 is reserved for both alice and bob"),
    ({"alice": [(20000, 20010), (20005, 20005)]}, "port 20005 is reserved twice for alice"),
])
def test_overlapping_reservations_are_refused(ranges, message):
    with pytest.raises(ValueError, match=message):
        Reservations(ranges)


def test_a_random_port_never_lands_in_a_reservation_and_misses_no_free_one():
    reservations = Reservations({"alice": [(20000, 20002), (20005, 20006)], "bob": [(20009, 20020)]})
    rng = random.Random(7)
    seen = Counter(reservations.pick_free(rng, 20000, 20010) for _ in range(2000))
    assert set(seen) == {20003, 20004, 20007, 20008}
    assert min(seen.values()) > 400  # each equally likely


def test_no_random_port_when_all_are_reserved():
    assert Reservations({"alice": [(20000, 20010)]}).pick_free(random.Random(), 20000, 20010) is None


def test_without_reservations_the_draw_is_bores():
    class Recorded(random.Random):
        def randint(self, low, high):
            self.asked = (low, high)
            return 20007

    rng = Recorded()
    assert Reservations().pick_free(rng, 20000, 20100) == 20007 and rng.asked == (20000, 20100)


def test_the_secret_answering_tells_who_it_is():
    roster = Roster(["unnamed"], [ALICE, BOB])
    challenge = uuid.uuid4()
    assert roster.identify(challenge, auth.answer("alice's secret", challenge)) == Identity("alice's secret", "alice")
    assert roster.identify(challenge, auth.answer("unnamed", challenge)) == Identity("unnamed", None)
    assert roster.identify(challenge, auth.answer("wrong", challenge)) is None
    assert roster.names == ("alice", "bob")


def test_a_secret_shows_in_no_repr():
    assert "secret" not in repr(ALICE).replace("NamedClient", "") and "alice's secret" not in repr(
        Identity("alice's secret", "alice")
    )


@pytest.mark.parametrize("secrets, clients, message", [
    ([], [ALICE, NamedClient("carol", "alice's secret")], "carol's secret is alice's too"),
    (["alice's secret"], [ALICE], "alice's secret is also given by --secret or --secret-file"),
    ([], [ALICE, NamedClient("carol", "c", ((20025, 20040),))], "port 20025 is reserved for both alice and carol"),
])
def test_one_secret_one_name(secrets, clients, message):
    with pytest.raises(RosterError, match=message):
        Roster(secrets, clients)


def test_only_its_owner_may_take_a_reserved_port():
    roster = Roster([], [ALICE, BOB])
    assert roster.may_take("alice", 20010) and not roster.may_take("bob", 20010) and not roster.may_take(None, 20025)
    assert roster.may_take("bob", 20011) and roster.may_take(None, 20011)


def test_a_reloaded_roster_recognises_a_renamed_secret_and_not_a_removed_one():
    before = Identity("alice's secret", "alice")
    assert Roster([], [NamedClient("alice-laptop", "alice's secret")]).recognise(before) == Identity(
        "alice's secret", "alice-laptop"
    )
    assert Roster([], [BOB]).recognise(before) is None


def test_a_clients_file_is_read(tmp_path):
    path = tmp_path / "clients.json"
    path.write_text(json.dumps({
        "alice": {"secret": "a", "ports": [20345, "21000-21009"]},
        "bob": {"secret": "b"},
        "c.d_e-9": {"secret": "c", "ports": 5},
    }))
    assert read_clients(str(path)) == (
        NamedClient("alice", "a", ((20345, 20345), (21000, 21009))), NamedClient("bob", "b"),
        NamedClient("c.d_e-9", "c", ((5, 5),)),
    )


@pytest.mark.parametrize("text, message", [
    ("{", "line 1 column 2: Expecting property name"),
    ("[]", "must hold a JSON object of clients"),
    ("{}", "names no client"),
    ('{"a b": {"secret": "x"}}', "client name 'a b' must be 1 to 64 letters"),
    ('{"-x": {"secret": "x"}}', "client name '-x' must be"),
    ('{"alice": "x"}', "alice must be an object like"),
    ('{"alice": {}}', 'alice needs a "secret": a non-empty string'),
    ('{"alice": {"secret": " "}}', 'alice needs a "secret"'),
    ('{"alice": {"secret": 5}}', 'alice needs a "secret"'),
    ('{"alice": {"secret": "x", "port": 5}}', "alice: unknown key 'port'"),
    ('{"alice": {"secret": "x", "ports": ["80-70"]}}', "alice: ports: '80-70' is not a port or a range"),
])
def test_a_bad_clients_file_is_named_with_its_problem(tmp_path, text, message):
    path = tmp_path / "clients.json"
    path.write_text(text)
    with pytest.raises(RosterError, match=message) as raised:
        read_clients(str(path))
    assert str(raised.value).startswith(str(path))


def test_a_missing_clients_file_is_named(tmp_path):
    with pytest.raises(RosterError, match="No such file"):
        read_clients(str(tmp_path / "nowhere.json"))


# The server keeping them

def make_server(secrets=(), clients=(ALICE, BOB)):
    reactor = TunnelReactor()
    settings = ServerSettings(min_port=20000, max_port=20100, secrets=secrets, clients=clients)
    return ServerFactory(settings, reactor, rng=random.Random(3)), reactor


def authenticated(server, secret: str, then: bytes = b""):
    protocol, transport = connect(server)
    challenge = uuid.UUID(frames(transport.value())[0][14:-3].decode())
    protocol.dataReceived(encode(Authenticate(auth.answer(secret, challenge))) + then)
    return protocol, transport


def last_frame(transport) -> bytes:
    return [f for f in frames(transport.value()) if f != HEARTBEAT][-1]


def test_a_name_may_open_its_reserved_port_and_another_may_not():
    server, _ = make_server(secrets=("unnamed",))
    _, alice = authenticated(server, "alice's secret", encode(Hello(20010)))
    assert last_frame(alice) == encode(Hello(20010))
    for secret in ("bob's secret", "unnamed"):
        _, other = authenticated(server, secret, encode(Hello(20025)))
        assert last_frame(other) == encode(Error(PORT_RESERVED)) and other.closed


def test_the_range_is_checked_before_the_reservation_as_bore_does():
    server, _ = make_server()
    _, bob = authenticated(server, "bob's secret", encode(Hello(30000)))
    assert last_frame(bob) == encode(Error("client port number not in allowed range"))


def test_hello_zero_never_gets_a_reserved_port_even_for_its_owner():
    server, reactor = make_server()
    for _ in range(60):
        protocol, transport = authenticated(server, "alice's secret", encode(Hello(0)))
        port = int(last_frame(transport)[9:-2])
        assert server.roster.reservations.owner(port) is None
        protocol.connectionLost(Failure(ConnectionDone()))


def test_a_data_connection_claims_only_its_own_tunnels_visitors():
    server, reactor = make_server()
    _, alice = authenticated(server, "alice's secret", encode(Hello(20010)))
    visitor, visitor_transport = reactor.visit(20010)
    (id,) = [uuid.UUID(f[15:-3].decode()) for f in frames(alice.value()) if f.startswith(b'{"Connection"')]

    _, bob_data = authenticated(server, "bob's secret", encode(Accept(id)) + b"bob's bytes")
    assert bob_data.closed and visitor_transport.value() == b"" and not visitor_transport.closed
    assert server.pending.get(id) is visitor  # still there for alice

    _, alice_data = authenticated(server, "alice's secret", encode(Accept(id)) + b"alice's bytes")
    assert visitor_transport.value() == b"alice's bytes" and not alice_data.closed


def test_a_reload_closes_the_tunnels_of_removed_secrets_and_renames_the_rest():
    server, _ = make_server()
    alice_control, alice = authenticated(server, "alice's secret", encode(Hello(20010)))
    _, bob = authenticated(server, "bob's secret", encode(Hello(20050)))
    renamed, newcomer = NamedClient("alice-laptop", "alice's secret"), NamedClient("carol", "c", ((20050, 20050),))
    server.apply(Roster(clients=[renamed, newcomer]))
    assert last_frame(bob) == encode(Error(SECRET_WITHDRAWN)) and bob.closed
    assert not alice.closed and alice_control.tunnel.name == "alice-laptop"
    assert [t.port for t in server.tunnels] == [20010]
    # The new reservations hold for new tunnels.
    _, latecomer = authenticated(server, "alice's secret", encode(Hello(20050)))
    assert last_frame(latecomer) == encode(Error(PORT_RESERVED))


def test_per_name_metrics_count_tunnels_visitors_and_bytes():
    server, reactor = make_server()
    value = server.metrics.registry.get_sample_value
    _, alice = authenticated(server, "alice's secret", encode(Hello(20010)))
    visitor, _ = reactor.visit(20010)
    (id,) = [uuid.UUID(f[15:-3].decode()) for f in frames(alice.value()) if f.startswith(b'{"Connection"')]
    data, _ = authenticated(server, "alice's secret", encode(Accept(id)) + b"12345")
    visitor.dataReceived(b"abc")
    assert value("spore_client_tunnels", {"client": "alice"}) == 1
    assert value("spore_client_tunnels", {"client": "bob"}) == 0
    assert value("spore_client_visitors_total", {"client": "alice"}) == 1
    assert value("spore_client_bytes_total", {"client": "alice", "direction": "to_visitors"}) == 5
    assert value("spore_client_bytes_total", {"client": "alice", "direction": "from_visitors"}) == 3
    visitor.connectionLost(None)  # what it carried stays counted once it is gone
    assert value("spore_client_bytes_total", {"client": "alice", "direction": "to_visitors"}) == 5
    assert value("spore_bytes_proxied_total") == 8
