"""The local client's protocols on a fake network and clock."""

from __future__ import annotations

import io
import uuid

import pytest
from twisted.internet.address import IPv6Address
from twisted.internet.defer import Deferred, fail
from twisted.internet.error import ConnectionDone, ConnectionRefusedError
from twisted.python.failure import Failure

from spore import auth
from spore.dialing import QuietFactory
from spore.local import LocalClient, TunnelFailed
from spore.messages import (
    Accept,
    Challenge,
    Connection,
    Error,
    Heartbeat,
    Hello,
    encode,
)
from spore.settings import LocalSettings
from tests.fakes import MemoryEndpoint, TunnelReactor

ID = uuid.UUID("04a1d439-2435-4664-9847-804f2ce92a0d")


class Refusing(MemoryEndpoint):
    def connect(self, factory):
        return fail(ConnectionRefusedError())


def start(secret=None, local=None, **settings):
    reactor, server = TunnelReactor(), MemoryEndpoint()
    stdout = io.StringIO()
    settings = LocalSettings(local_port=3000, to="tunnel.example", secret=secret, **settings)
    client = LocalClient(settings, reactor, server, local or MemoryEndpoint(), stdout=stdout)
    outcome = []
    client.start().addBoth(outcome.append)
    return client, reactor, server, stdout, outcome


def opened(**settings):
    client, reactor, server, stdout, outcome = start(**settings)
    control, transport = server.connections[0]
    control.dataReceived(encode(Hello(20345)) + encode(Heartbeat()))
    return client, reactor, server, control, transport, outcome


def test_prints_the_public_address_once_the_tunnel_is_open():
    client, reactor, server, stdout, outcome = start()
    _, transport = server.connections[0]
    assert transport.value() == encode(Hello(0))
    assert stdout.getvalue() == ""
    server.connections[0][0].dataReceived(encode(Hello(20345)))
    assert stdout.getvalue() == "listening at tunnel.example:20345\n"
    assert outcome == []


def test_a_visitor_gets_a_data_connection_spliced_to_the_local_service():
    client, reactor, server, control, _, outcome = opened()
    control.dataReceived(encode(Connection(ID)) + encode(Heartbeat()))
    data, data_transport = server.connections[1]
    assert data_transport.value() == encode(Accept(ID))
    local, local_transport = client.local_endpoint.connections[0]
    data.dataReceived(b"visitor bytes")
    assert local_transport.value() == b"visitor bytes"
    local.dataReceived(b"service bytes")
    assert data_transport.value() == encode(Accept(ID)) + b"service bytes"
    assert outcome == []


def start_dialling_addresses(peer_host: str):
    """A client whose server's name leads to ``peer_host``; the addresses its data connections were dialled at."""
    reactor, server = TunnelReactor(), MemoryEndpoint(peer_host=peer_host)
    settings = LocalSettings(local_port=3000, to="tunnel.example")
    dialled = []

    class Dialer:
        def __init__(self, address):
            self.address = address

        def dial(self, build, failed):
            dialled.append(self.address)
            server.connect(QuietFactory(build))

    client = LocalClient(settings, reactor, server, MemoryEndpoint(), stdout=io.StringIO(), dial_server_at=Dialer)
    client.start()
    return reactor, server, dialled


def test_data_connections_go_to_the_address_the_control_connection_reached():
    reactor, server, dialled = start_dialling_addresses("192.0.2.7")
    control, _ = server.connections[0]
    control.dataReceived(encode(Hello(20345)) + encode(Connection(ID)))
    assert dialled == ["192.0.2.7"]
    assert server.connections[1][1].value() == encode(Accept(ID))


def test_after_reconnecting_to_an_address_not_to_dial_again_data_connections_go_through_the_endpoint():
    reactor, server, dialled = start_dialling_addresses("192.0.2.7")
    control, _ = server.connections[0]
    control.dataReceived(encode(Hello(20345)))
    # The name now leads to a link-local address, which needs its interface.
    server.peer_host = IPv6Address("TCP", "fe80::7", 7835, scopeID=2)
    lose(control)
    reactor.advance(2)
    again, _ = server.connections[1]
    again.dataReceived(encode(Hello(20345)) + encode(Connection(ID)))
    assert dialled == []  # not to 192.0.2.7, the address of the connection lost
    assert server.connections[2][1].value() == encode(Accept(ID))


def test_a_data_connection_answers_the_challenge_before_accepting():
    client, reactor, server, stdout, outcome = start(secret="s3cret")
    control, transport = server.connections[0]
    control.dataReceived(encode(Challenge(ID)) + encode(Hello(20345)))
    assert transport.value() == b'{"Authenticate":"%s"}\0' % auth.answer("s3cret", ID).encode() + encode(Hello(0))
    other = uuid.uuid4()
    control.dataReceived(encode(Connection(other)))
    data, data_transport = server.connections[1]
    assert data_transport.value() == b""
    data.dataReceived(encode(Challenge(ID)))
    assert data_transport.value() == b'{"Authenticate":"%s"}\0' % auth.answer("s3cret", ID).encode() + encode(Accept(other))


class SlowEndpoint(MemoryEndpoint):
    """Connects only when the test says so."""

    def connect(self, factory):
        self.pending = lambda: MemoryEndpoint.connect(self, factory)
        return Deferred()


def test_bytes_that_come_with_the_challenge_wait_for_the_local_service_and_then_flow():
    client, reactor, server, stdout, outcome = start(secret="s3cret", local=SlowEndpoint())
    control, _ = server.connections[0]
    control.dataReceived(encode(Challenge(ID)) + encode(Hello(20345)) + encode(Connection(ID)))
    data, data_transport = server.connections[1]
    data.dataReceived(encode(Challenge(ID)) + b"visitor bytes in the same read")
    data.dataReceived(b", and more")  # the transport is paused; a real one would not read this yet
    client.local_endpoint.pending()
    local, local_transport = client.local_endpoint.connections[0]
    assert local_transport.value() == b"visitor bytes in the same read, and more"
    data.dataReceived(b" and then")
    assert local_transport.value().endswith(b"more and then")


def test_a_refusing_local_service_closes_the_visitor_and_keeps_the_tunnel():
    client, reactor, server, stdout, outcome = start(local=Refusing())
    control, control_transport = server.connections[0]
    control.dataReceived(encode(Hello(20345)))
    control.dataReceived(encode(Connection(ID)))
    _, data_transport = server.connections[1]
    assert data_transport.disconnecting
    assert not control_transport.disconnecting and outcome == []


@pytest.mark.parametrize(
    "frames, why",
    [
        (encode(Error("port already in use")), "server error: port already in use"),
        (encode(Challenge(ID)), "server requires authentication, but no client secret was provided"),
        (encode(Heartbeat()), "unexpected initial non-hello message: Heartbeat()"),
        (b"garbage\0", "bad frame from server: unable to parse message"),
        (b"x" * 300, "bad frame from server: frame error, invalid byte length"),
    ],
)
def test_a_bad_answer_to_hello_is_fatal(frames, why):
    client, reactor, server, stdout, outcome = start()
    control, transport = server.connections[0]
    control.dataReceived(frames)
    assert transport.disconnecting
    (failure,) = outcome
    assert failure.check(TunnelFailed) and failure.getErrorMessage() == why


@pytest.mark.parametrize("secret", [None, "s3cret"])
def test_a_silent_server_is_given_up_after_three_seconds(secret):
    client, reactor, server, stdout, outcome = start(secret=secret)
    reactor.advance(2.999)
    assert outcome == []
    reactor.advance(0.001)
    assert outcome[0].getErrorMessage() == "timed out waiting for initial message (if the server uses TLS, add --tls)"


def test_without_reconnecting_an_error_after_the_tunnel_opened_is_fatal():
    client, reactor, server, control, transport, outcome = opened(reconnect=False)
    control.dataReceived(encode(Error("shutting down")))
    assert outcome[0].getErrorMessage() == "server error: shutting down"


def test_without_reconnecting_a_closed_control_connection_is_fatal():
    client, reactor, server, control, transport, outcome = opened(reconnect=False)
    control.connectionLost(Failure(ConnectionDone()))
    assert outcome[0].getErrorMessage() == "server at tunnel.example:7835 closed the connection"


def lose(control):
    control.transport.loseConnection()
    control.connectionLost(Failure(ConnectionDone()))


def test_a_lost_tunnel_is_reopened_on_the_same_port():
    client, reactor, server, control, transport, outcome = opened()
    lose(control)
    assert len(server.connections) == 1 and outcome == []
    reactor.advance(2)  # the first retry comes after 0.5 s and some jitter
    assert len(server.connections) == 2
    again, again_transport = server.connections[1]
    assert again_transport.value() == encode(Hello(20345))
    again.dataReceived(encode(Hello(20345)))
    assert client.stdout.getvalue() == "listening at tunnel.example:20345\n" * 2
    assert outcome == []


def test_a_port_not_free_again_is_asked_for_a_while_then_any_port_is_taken():
    client, reactor, server, control, transport, outcome = opened()
    lose(control)
    asked = []
    while reactor.seconds() < 40:
        reactor.advance(1)
        if len(server.connections) > len(asked) + 1:
            attempt, attempt_transport = server.connections[-1]
            asked.append(attempt_transport.value())
            if attempt_transport.value() == encode(Hello(0)):
                attempt.dataReceived(encode(Hello(20999)))
                break
            attempt.dataReceived(encode(Error("port already in use")))
            lose(attempt)
    assert len(asked) > 3 and set(asked[:-1]) == {encode(Hello(20345))} and asked[-1] == encode(Hello(0))
    assert client.stdout.getvalue().endswith("listening at tunnel.example:20999\n")
    assert outcome == []


@pytest.mark.parametrize("error", ["invalid secret", "client port number not in allowed range"])
def test_errors_that_retrying_cannot_fix_end_it_even_when_reconnecting(error):
    client, reactor, server, control, transport, outcome = opened()
    lose(control)
    reactor.advance(2)
    server.connections[1][0].dataReceived(encode(Error(error)))
    assert outcome[0].getErrorMessage() == f"server error: {error}"
    reactor.advance(60)
    assert len(server.connections) == 2


def test_a_silent_server_is_left_and_the_tunnel_reopened():
    client, reactor, server, control, transport, outcome = opened(heartbeat_timeout=8)
    reactor.advance(7.9)
    control.dataReceived(encode(Heartbeat()))
    reactor.advance(7.9)
    assert not transport.disconnected
    reactor.advance(0.1)
    assert transport.disconnected  # aborted: a dead peer may never acknowledge a close
    control.connectionLost(Failure(ConnectionDone()))
    reactor.advance(2)
    assert len(server.connections) == 2 and outcome == []


def test_an_unreachable_server_is_named():
    reactor = TunnelReactor()
    settings = LocalSettings(local_port=3000, to="tunnel.example", control_port=7000)
    outcome = []
    client = LocalClient(settings, reactor, Refusing(), MemoryEndpoint())
    client.start().addBoth(outcome.append)
    reactor.advance(0)
    assert outcome[0].getErrorMessage() == "could not connect to server at tunnel.example:7000: connection refused"
    assert not client.service.running and reactor.getDelayedCalls() == []  # no retry left behind


def test_stopping_closes_the_tunnel_without_failing():
    client, reactor, server, control, transport, outcome = opened()
    client.stop()
    assert transport.disconnecting
    control.connectionLost(Failure(ConnectionDone()))
    assert outcome == [None]
