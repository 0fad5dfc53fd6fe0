"""TLS on real loopback sockets: which certificates pass, and the words a user gets when one does not."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
import pytest_twisted
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from OpenSSL import SSL
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import HostnameEndpoint, TCP4ServerEndpoint
from twisted.internet.error import (
    ConnectionDone,
    ConnectionLost,
    ConnectionRefusedError,
)
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.ssl import Certificate, TLSVersion, optionsForClientTLS
from twisted.python.failure import Failure

from spore.handshake_budget import HandshakeBudget, wrap_server_factory
from spore.tls import (
    NEEDS_CLIENT_CERTIFICATE,
    TLSConfigError,
    client_options,
    describe_tls_failure,
    server_options,
    wrap_client_endpoint,
)
from tests.certs import PKI

TIMEOUT = 5
GREETING = b'{"Challenge":"greetings"}\x00'
FRAME = b'{"Hello":0}\x00'  # longer than a TLS record header, as a real first frame is


class Greeter(Protocol):
    """A server that speaks first, as Spore's does with a secret, and records what it hears."""

    def __init__(self) -> None:
        self.heard = b""
        self.ended: Deferred[None] = Deferred()

    def connectionMade(self) -> None:
        self.transport.write(GREETING)

    def dataReceived(self, data: bytes) -> None:
        self.heard += data

    def connectionLost(self, reason: Failure) -> None:
        self.reason = reason
        self.ended.callback(None)


class Hangup(Greeter):
    """A plain server that closes as soon as anything arrives."""

    def connectionMade(self) -> None:
        pass

    def dataReceived(self, data: bytes) -> None:
        self.transport.loseConnection()


class Caller(Protocol):
    """A client that sends a frame, hangs up once greeted, and explains how the connection ended."""

    def __init__(self) -> None:
        self.received = b""
        self.ended: Deferred[None] = Deferred()

    def connectionMade(self) -> None:
        self.transport.write(FRAME)

    def dataReceived(self, data: bytes) -> None:
        self.received += data
        if GREETING in self.received:
            self.transport.loseConnection()

    def connectionLost(self, reason: Failure) -> None:
        self.reason = reason
        # describe_tls_failure needs the transport while it still holds the TLS connection.
        self.problem = describe_tls_failure(reason, self.transport)
        self.ended.callback(None)


class Recording(Factory):
    """Builds server protocols and keeps them, to see what the server went through."""

    noisy = False

    def __init__(self, protocol: type[Greeter]) -> None:
        self.protocol = protocol
        self.built: list[Greeter] = []

    def buildProtocol(self, addr) -> Greeter:
        built = Factory.buildProtocol(self, addr)
        self.built.append(built)
        return built


@dataclass
class Outcome:
    greeted: bool
    reason: Failure
    problem: str | None
    server_heard: bytes
    server_reason: Failure


async def exchange(reactor, server_tls, client_tls, host: str = "127.0.0.1", server=Greeter) -> Outcome:
    """One connection between a server and a client, either of them with TLS or without (None)."""
    recording = Recording(server)
    factory = wrap_server_factory(recording, server_tls, HandshakeBudget(reactor)) if server_tls else recording
    port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(factory)
    try:
        endpoint = HostnameEndpoint(reactor, host, port.getHost().port)
        if client_tls:
            endpoint = wrap_client_endpoint(endpoint, client_tls)
        caller = Caller()
        await endpoint.connect(Factory.forProtocol(lambda: caller)).addTimeout(TIMEOUT, reactor)
        await caller.ended.addTimeout(TIMEOUT, reactor)
        [greeter] = recording.built
        await greeter.ended.addTimeout(TIMEOUT, reactor)
    finally:
        await port.stopListening()
    return Outcome(GREETING in caller.received, caller.reason, caller.problem, greeter.heard, greeter.reason)


def accepted(outcome: Outcome) -> bool:
    return outcome.greeted and outcome.server_heard == FRAME and outcome.problem is None


# What a client may connect to, and the server it finds there.


@pytest_twisted.ensureDeferred
@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
async def test_a_certificate_for_the_host_name_or_address_is_accepted(reactor, pki, host):
    outcome = await exchange(reactor, server_options(*pki.server), client_options(host, pki.ca), host=host)
    assert accepted(outcome)
    assert outcome.reason.check(ConnectionDone)


@pytest_twisted.ensureDeferred
async def test_a_certfile_may_hold_the_intermediates_after_the_certificate(reactor, pki):
    outcome = await exchange(reactor, server_options(*pki.chained_server), client_options("127.0.0.1", pki.ca))
    assert accepted(outcome)


@pytest_twisted.ensureDeferred
async def test_a_certificate_from_an_unknown_ca_is_refused(reactor, pki):
    outcome = await exchange(reactor, server_options(*pki.other_ca_server), client_options("127.0.0.1", pki.ca))
    assert outcome.reason.check(SSL.Error)
    assert outcome.problem == "the server's certificate is not trusted (unable to get local issuer certificate)"
    assert not outcome.greeted and outcome.server_heard == b""


@pytest_twisted.ensureDeferred
async def test_without_a_cacertfile_the_system_trust_store_decides(reactor, pki):
    outcome = await exchange(reactor, server_options(*pki.server), client_options("127.0.0.1"))
    assert outcome.problem == "the server's certificate is not trusted (unable to get local issuer certificate)"


@pytest_twisted.ensureDeferred
@pytest.mark.parametrize(
    "server, host",
    [("wrong_name_server", "127.0.0.1"), ("wrong_name_server", "localhost"), ("server", "127.0.0.2")],
)
async def test_a_certificate_for_another_name_is_refused(reactor, pki, server, host):
    # The client checks the name it was given, whatever address it reaches.
    options = client_options(host, pki.ca)
    outcome = await exchange(reactor, server_options(*getattr(pki, server)), options, host="127.0.0.1")
    assert outcome.problem == f"the server's certificate is not valid for {host}"
    assert not outcome.greeted and outcome.server_heard == b""


@pytest_twisted.ensureDeferred
@pytest.mark.parametrize(
    "server, problem",
    [
        ("expired_server", "the server's certificate has expired"),
        ("future_server", "the server's certificate is not valid yet (is the clock right?)"),
    ],
)
async def test_a_certificate_outside_its_dates_is_refused(reactor, pki, server, problem):
    outcome = await exchange(reactor, server_options(*getattr(pki, server)), client_options("127.0.0.1", pki.ca))
    assert outcome.problem == problem
    assert not outcome.greeted and outcome.server_heard == b""


@pytest_twisted.ensureDeferred
async def test_insecure_accepts_any_certificate(reactor, pki):
    outcome = await exchange(
        reactor, server_options(*pki.wrong_name_server), client_options("127.0.0.1", insecure=True)
    )
    assert accepted(outcome)


# Mutual TLS: the server asks every connection for a certificate signed by its CA.


@pytest_twisted.ensureDeferred
async def test_mutual_tls_accepts_a_client_certificate_signed_by_the_ca(reactor, pki):
    outcome = await exchange(
        reactor, server_options(*pki.server, cacertfile=pki.ca), client_options("127.0.0.1", pki.ca, *pki.client)
    )
    assert accepted(outcome)


def _client_limited_to(version: TLSVersion, pki: PKI, identity: tuple[str, str] | None = None):
    """What client_options makes, but unable to speak a TLS version above ``version``."""
    extra = {"lowerMaximumSecurityTo": version}
    if identity:
        extra["certificate"] = x509.load_pem_x509_certificate(Path(identity[0]).read_bytes())
        extra["privateKey"] = serialization.load_pem_private_key(Path(identity[1]).read_bytes(), None)
    ca = Certificate.loadPEM(Path(pki.ca).read_bytes())
    return optionsForClientTLS("127.0.0.1", ca, extraCertificateOptions=extra)


@pytest_twisted.ensureDeferred
@pytest.mark.parametrize("version", [None, TLSVersion.TLSv1_2])
async def test_mutual_tls_refuses_a_client_without_a_certificate(reactor, pki, version):
    # TLS 1.3 says so with an alert after the client thinks the handshake is done;
    # TLS 1.2 with a "handshake failure" during it.
    client = client_options("127.0.0.1", pki.ca) if version is None else _client_limited_to(version, pki)
    outcome = await exchange(reactor, server_options(*pki.server, cacertfile=pki.ca), client)
    assert outcome.reason.check(SSL.Error)
    assert outcome.problem == NEEDS_CLIENT_CERTIFICATE
    assert not outcome.greeted and outcome.server_heard == b""
    assert outcome.server_reason.check(SSL.Error)


@pytest_twisted.ensureDeferred
@pytest.mark.parametrize("version", [None, TLSVersion.TLSv1_2])
async def test_mutual_tls_refuses_a_certificate_from_another_ca(reactor, pki, version):
    client = (
        client_options("127.0.0.1", pki.ca, *pki.other_ca_client)
        if version is None
        else _client_limited_to(version, pki, pki.other_ca_client)
    )
    outcome = await exchange(reactor, server_options(*pki.server, cacertfile=pki.ca), client)
    assert outcome.problem == "the server rejected the client certificate (unknown ca)"
    assert not outcome.greeted and outcome.server_heard == b""


# TLS on one side only.


@pytest_twisted.ensureDeferred
async def test_a_tls_client_hears_a_plain_server_does_not_speak_tls(reactor, pki):
    outcome = await exchange(reactor, None, client_options("127.0.0.1", pki.ca))
    assert outcome.problem == "the server does not speak TLS (wrong version number)"
    assert not outcome.greeted


@pytest_twisted.ensureDeferred
async def test_a_tls_client_hears_a_plain_server_hang_up_during_the_handshake(reactor, pki):
    outcome = await exchange(reactor, None, client_options("127.0.0.1", pki.ca), server=Hangup)
    assert outcome.reason.check(ConnectionDone, ConnectionLost)
    assert outcome.problem == "the server closed the connection during the TLS handshake (does it speak TLS?)"


@pytest_twisted.ensureDeferred
async def test_a_plain_client_of_a_tls_server_is_hung_up_on_without_a_word(reactor, pki):
    # Nothing TLS reaches the plain client: just the end of the connection.
    # (A plain client that waits for the server to speak first hears nothing
    # at all, until one side's handshake deadline.)
    outcome = await exchange(reactor, server_options(*pki.server), None)
    assert not outcome.greeted
    assert outcome.reason.check(ConnectionDone, ConnectionLost)
    assert outcome.problem is None
    assert outcome.server_heard == b""
    assert outcome.server_reason.check(SSL.Error)


# describe_tls_failure on its own.


def test_failures_that_are_not_tls_are_left_to_the_caller():
    assert describe_tls_failure(Failure(ConnectionRefusedError())) is None
    assert describe_tls_failure(Failure(ConnectionDone())) is None


def test_without_the_transport_a_rejected_certificate_gets_the_general_words():
    failure = Failure(SSL.Error([("SSL routines", "", "certificate verify failed")]))
    assert describe_tls_failure(failure) == "the server's certificate is not trusted"


def test_an_unknown_tls_failure_is_passed_on_in_openssl_words():
    failure = Failure(SSL.Error([("SSL routines", "", "no shared cipher")]))
    assert describe_tls_failure(failure) == "the server's TLS handshake failed: no shared cipher"


# Files that cannot be used are start-up errors naming the file and the problem.


def error(call, *args, **kwargs) -> str:
    with pytest.raises(TLSConfigError) as raised:
        call(*args, **kwargs)
    return str(raised.value)


def test_a_missing_or_unreadable_file_is_named(pki, tmp_path):
    cert, key = pki.server
    missing = str(tmp_path / "missing.pem")
    assert error(server_options, missing, key) == f"--certfile {missing}: no such file"
    assert error(server_options, cert, missing) == f"--keyfile {missing}: no such file"
    assert error(server_options, cert, key, missing) == f"--cacertfile {missing}: no such file"
    assert error(client_options, "localhost", missing) == f"--cacertfile {missing}: no such file"
    assert error(server_options, str(tmp_path), key) == f"--certfile {tmp_path}: Is a directory"


def test_a_file_that_is_not_pem_is_named(pki, tmp_path):
    cert, key = pki.server
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("this is not PEM\n")
    assert error(server_options, str(garbage), key) == f"--certfile {garbage}: no PEM certificate in it"
    assert error(server_options, cert, str(garbage)) == f"--keyfile {garbage}: no PEM private key in it"
    assert error(server_options, cert, cert) == f"--keyfile {cert}: no PEM private key in it"


def test_a_ca_file_without_certificates_is_named(pki):
    key = pki.server[1]
    assert error(server_options, *pki.server, cacertfile=key) == f"--cacertfile {key}: no PEM certificate in it"
    assert error(client_options, "localhost", cacertfile=key) == f"--cacertfile {key}: no PEM certificate in it"


def test_a_key_that_does_not_match_the_certificate_is_named(pki):
    cert, other_key = pki.server[0], pki.client[1]
    mismatch = f"--keyfile {other_key} does not match --certfile {cert}"
    assert error(server_options, cert, other_key) == mismatch
    assert error(client_options, "localhost", certfile=cert, keyfile=other_key) == mismatch


def test_an_encrypted_key_is_named(pki, tmp_path):
    key = serialization.load_pem_private_key(Path(pki.server[1]).read_bytes(), password=None)
    encrypted = tmp_path / "encrypted.key"
    encrypted.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"passphrase"),
        )
    )
    assert error(server_options, pki.server[0], str(encrypted)) == (
        f"--keyfile {encrypted}: the key is encrypted; give it without a passphrase"
    )


def test_a_client_certificate_needs_its_key_and_the_other_way_round(pki):
    both = "--certfile and --keyfile go together: give both"
    assert error(client_options, "localhost", certfile=pki.client[0]) == both
    assert error(client_options, "localhost", keyfile=pki.client[1]) == both


def test_a_server_name_no_certificate_can_hold_is_named():
    assert error(client_options, "under_score.example").startswith(
        "--to under_score.example: not a host name a certificate can be checked against"
    )
