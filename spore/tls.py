"""TLS for the control port and the connections to it, and plain words for why it failed.

TLS is a wrapper around a factory (server) or an endpoint (client), so the
protocols that frame and splice bytes never know it is there.  Verification
is Twisted's (``optionsForClientTLS``, which checks the host name with
service_identity); this module only loads the files, with errors that name
them, and explains a failed handshake afterwards.  Its one addition to
Twisted's TLS is half-close (:class:`HalfCloseTLSTransport`), which the
splice needs to pass a FIN through the tunnel.
"""

from __future__ import annotations

from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import (
    PrivateKeyTypes as PrivateKey,
)
from OpenSSL import SSL, crypto
from service_identity import VerificationError
from twisted.internet import error
from twisted.internet.interfaces import (
    IHalfCloseableProtocol,
    IOpenSSLClientConnectionCreator,
    IOpenSSLServerConnectionCreator,
    IProtocolFactory,
    IStreamClientEndpoint,
)
from twisted.internet.ssl import (
    Certificate,
    CertificateOptions,
    optionsForClientTLS,
    platformTrust,
    trustRootFromCertificates,
)
from twisted.protocols.policies import ProtocolWrapper
from twisted.protocols.tls import (
    BufferingTLSTransport,
    TLSMemoryBIOFactory,
    TLSMemoryBIOProtocol,
)
from twisted.python.failure import Failure
from zope.interface import implementer

NEEDS_CLIENT_CERTIFICATE = "the server requires a client certificate (use --certfile and --keyfile)"

# X509_V_ERR_* numbers from OpenSSL's x509_vfy.h that deserve their own words.
_NOT_YET_VALID, _EXPIRED = 9, 10

# What OpenSSL says when the first bytes back are not TLS at all.
_NOT_TLS = {"wrong version number", "packet length too long", "record layer failure", "http request"}

# Alerts a server sends about the certificate its client presented.
_CLIENT_CERTIFICATE_ALERTS = {
    "bad certificate", "unsupported certificate", "certificate revoked", "certificate expired",
    "certificate unknown", "unknown ca", "access denied",
}


class TLSConfigError(Exception):
    """A certificate or key file cannot be used; the message names the file and why."""


@dataclass(frozen=True)
class _Identity:
    """A certificate to present, its key, and the intermediates to send with it."""

    key: PrivateKey
    certificate: x509.Certificate
    chain: list[x509.Certificate]

    def options(self) -> dict:
        return {"privateKey": self.key, "certificate": self.certificate, "extraCertChain": self.chain}


def _read(path: str, option: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        raise TLSConfigError(f"{option} {path}: no such file") from None
    except OSError as e:
        raise TLSConfigError(f"{option} {path}: {e.strerror or e}") from None


def _certificates(path: str, option: str) -> list[x509.Certificate]:
    try:
        return x509.load_pem_x509_certificates(_read(path, option))
    except ValueError:
        raise TLSConfigError(f"{option} {path}: no PEM certificate in it") from None


def _identity(certfile: str, keyfile: str) -> _Identity:
    if not certfile or not keyfile:
        raise TLSConfigError("--certfile and --keyfile go together: give both")
    leaf, *chain = _certificates(certfile, "--certfile")
    try:
        key = serialization.load_pem_private_key(_read(keyfile, "--keyfile"), password=None)
    except TypeError:  # cryptography's way of saying it needs a password
        raise TLSConfigError(f"--keyfile {keyfile}: the key is encrypted; give it without a passphrase") from None
    except (ValueError, UnsupportedAlgorithm):
        raise TLSConfigError(f"--keyfile {keyfile}: no PEM private key in it") from None
    spki = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    if key.public_key().public_bytes(*spki) != leaf.public_key().public_bytes(*spki):
        raise TLSConfigError(f"--keyfile {keyfile} does not match --certfile {certfile}")
    return _Identity(key, leaf, chain)


def _authorities(cacertfile: str):
    found = _certificates(cacertfile, "--cacertfile")
    return trustRootFromCertificates([Certificate(crypto.X509.from_cryptography(c)) for c in found])


def server_options(certfile: str, keyfile: str, cacertfile: str | None = None) -> IOpenSSLServerConnectionCreator:
    """TLS settings for the control port; with ``cacertfile``, clients must present a certificate it signed."""
    identity = _identity(certfile, keyfile)
    if cacertfile is None:
        return CertificateOptions(**identity.options())
    # A trust root makes CertificateOptions require and verify the peer's certificate.
    return CertificateOptions(**identity.options(), trustRoot=_authorities(cacertfile))


class HalfCloseTLSTransport(BufferingTLSTransport):
    """Twisted's TLS transport, with half-close: ``loseWriteConnection`` sends close_notify and reading goes on.

    Twisted's own has none: its ``loseWriteConnection`` is the TCP transport's
    (``ProtocolWrapper.__getattr__``), a bare FIN under the TLS session that
    the peer takes for a truncation attack and a lost connection; and it
    answers the peer's close_notify with its own and hangs up.  TLS 1.3 (and
    OpenSSL with 1.2 as well) lets each side send close_notify on its own and
    keep reading, or keep writing after receiving one, like a FIN each way.

    So ``loseWriteConnection()`` sends close_notify (once the handshake is
    done) and calls the wrapped protocol's ``writeConnectionLost()``; and,
    when the wrapped protocol provides ``IHalfCloseableProtocol``, the peer's
    close_notify calls its ``readConnectionLost()`` and leaves the connection
    open for writing.  Once both directions are closed the connection ends as
    Twisted's does.  With any other protocol, receiving close_notify is
    Twisted's full close.

    This leans on ``TLSMemoryBIOProtocol``'s internals (Twisted 26.10):
    ``_tlsConnection`` (the OpenSSL connection), ``_handshakeDone`` and
    ``_appSendBuffer`` (OpenSSL cannot send close_notify mid-handshake, nor
    before the writes it held back during it), ``_aggregator`` (the small
    writes ``BufferingTLSTransport`` holds for a reactor turn),
    ``_flushSendBIO``, ``_shutdownTLS``, ``_tlsShutdownFinished``,
    ``_lostTLSConnection`` and ``_aborted``, and ``_flushReceiveBIO`` and
    ``_write``, overridden below.
    """

    _write_close_pending = False  # loseWriteConnection() came before close_notify could go
    _read_closed = False  # the peer's close_notify came, and the protocol was told

    def loseWriteConnection(self) -> None:
        if self._read_closed:
            # The peer sent its close_notify already: both directions are done.
            self.loseConnection()
            return
        if not self.connected or self.disconnecting or self._write_close_pending or self._sent_close_notify():
            return
        self._write_close_pending = True
        self._aggregator.flush()
        self._send_close_notify()

    def dataReceived(self, data: bytes) -> None:
        super().dataReceived(data)
        # The handshake may have finished and held-back writes gone out.
        if self._write_close_pending:
            self._send_close_notify()

    def _send_close_notify(self) -> None:
        if self._lostTLSConnection or self.disconnecting or not self._handshakeDone or self._appSendBuffer:
            return  # gone, closing in full anyway, or not yet: dataReceived tries again
        self._write_close_pending = False
        if self._read_closed:
            self.loseConnection()
            return
        self._tlsConnection.shutdown()
        self._flushSendBIO()
        protocol = IHalfCloseableProtocol(self.wrappedProtocol, None)
        if protocol is not None:
            protocol.writeConnectionLost()

    def _sent_close_notify(self) -> bool:
        return bool(self._tlsConnection.get_shutdown() & SSL.SENT_SHUTDOWN)

    def _write(self, data: bytes) -> None:
        # Drop writes after close_notify, as TCP drops those after its FIN;
        # OpenSSL would refuse them and Twisted would fail the connection.
        if self._lostTLSConnection or not self._sent_close_notify():
            super()._write(data)

    def _flushReceiveBIO(self) -> None:
        # Twisted 26.10's TLSMemoryBIOProtocol._flushReceiveBIO; only the
        # ZeroReturnError branch (the peer's close_notify) differs.
        while not self._lostTLSConnection:
            try:
                data = self._tlsConnection.recv(2**15)
            except SSL.WantReadError:
                break
            except SSL.ZeroReturnError:
                if self._read_closed:
                    break  # OpenSSL says it again on every recv: the protocol knows
                half_closeable = IHalfCloseableProtocol(self.wrappedProtocol, None)
                if half_closeable is not None and not self.disconnecting and not self._sent_close_notify():
                    # Our direction stays open: no close_notify back, no hang-up.
                    self._read_closed = True
                    half_closeable.readConnectionLost()
                    break
                self._shutdownTLS()
                self._tlsShutdownFinished(None)
            except SSL.Error:
                self._tlsShutdownFinished(Failure())
            else:
                if not self._aborted:
                    ProtocolWrapper.dataReceived(self, data)
        self._flushSendBIO()


class HalfCloseTLSFactory(TLSMemoryBIOFactory):
    """Twisted's TLS wrapping factory, building :class:`HalfCloseTLSTransport`."""

    protocol = HalfCloseTLSTransport


def client_options(
    hostname: str,
    cacertfile: str | None = None,
    certfile: str | None = None,
    keyfile: str | None = None,
    insecure: bool = False,
) -> IOpenSSLClientConnectionCreator:
    """TLS settings for connecting to the server at ``hostname`` (a DNS name or an IP address).

    The server's certificate must be valid for ``hostname`` and signed by a CA
    in ``cacertfile``, or in the system's trust store; ``insecure`` checks
    nothing.  ``certfile`` and ``keyfile`` are the client's own certificate.
    """
    identity = _identity(certfile, keyfile) if certfile or keyfile else None
    extra = identity.options() if identity else {}
    if insecure:
        return CertificateOptions(verify=False, **extra)
    trust = _authorities(cacertfile) if cacertfile else platformTrust()
    try:
        return optionsForClientTLS(hostname, trust, extraCertificateOptions=extra)
    except ValueError as e:  # IDNA's verdict on a name no certificate can hold
        raise TLSConfigError(f"--to {hostname}: not a host name a certificate can be checked against ({e})") from None


def wrap_client_endpoint(
    endpoint: IStreamClientEndpoint, options: IOpenSSLClientConnectionCreator
) -> IStreamClientEndpoint:
    """An endpoint whose connections speak TLS over ``endpoint``'s."""
    return _TLSClientEndpoint(endpoint, options)


@implementer(IStreamClientEndpoint)
class _TLSClientEndpoint:
    """What ``wrapClientTLS`` makes, with :class:`HalfCloseTLSFactory` (it hard-codes Twisted's factory)."""

    def __init__(self, endpoint: IStreamClientEndpoint, options: IOpenSSLClientConnectionCreator) -> None:
        self._endpoint = endpoint
        self._options = options

    def connect(self, factory: IProtocolFactory):
        connecting = self._endpoint.connect(HalfCloseTLSFactory(self._options, True, factory))
        # The caller wants the protocol its own factory built, not the TLS layer.
        return connecting.addCallback(lambda tls: tls.wrappedProtocol)


def _tls_connection(transport: object) -> SSL.Connection | None:
    # TLSMemoryBIOProtocol hands out its OpenSSL connection as its system handle.
    return transport.getHandle() if isinstance(transport, TLSMemoryBIOProtocol) else None


def _openssl_reason(e: SSL.Error) -> str:
    """The reason text of OpenSSL's last error, e.g. "certificate verify failed"."""
    try:
        return e.args[0][-1][2]
    except (IndexError, TypeError):
        return str(e)


def _expected_names(e: VerificationError) -> str:
    """The host name or address the certificate did not match."""
    names = [getattr(m.mismatched_id, "hostname", None) or m.mismatched_id.ip for m in e.errors]
    return ", ".join(n.decode("ascii") if isinstance(n, bytes) else str(n) for n in names)


def _why_not_trusted(connection: SSL.Connection | None) -> str:
    """Why OpenSSL rejected the server's certificate, which its error ("certificate verify failed") does not say."""
    # Recording the reason during the handshake would take a verify callback,
    # and that would replace the one with which Twisted checks the host name.
    # So verify the chain the server sent once more, only to hear why.
    chain = connection.get_peer_cert_chain() if connection else None
    if not chain:
        return "the server's certificate is not trusted"
    store = connection.get_context().get_cert_store()
    try:
        crypto.X509StoreContext(store, chain[0], chain[1:]).verify_certificate()
    except crypto.X509StoreContextError as e:
        code, depth, message = e.errors
        if depth == 0 and code == _EXPIRED:
            return "the server's certificate has expired"
        if depth == 0 and code == _NOT_YET_VALID:
            return "the server's certificate is not valid yet (is the clock right?)"
        return f"the server's certificate is not trusted ({message})"
    return "the server's certificate is not trusted"


def describe_tls_failure(reason: Failure, transport: object | None = None) -> str | None:
    """Plain words for a connection to the server that failed because of TLS; None if TLS is not why.

    ``transport`` is the failed connection's transport (``self.transport`` in
    the protocol's ``connectionLost``, where every TLS failure arrives): with
    it, a rejected server certificate is explained (expired, untrusted...)
    instead of OpenSSL's bare "certificate verify failed".
    """
    connection = _tls_connection(transport)
    if reason.check(VerificationError):
        return f"the server's certificate is not valid for {_expected_names(reason.value)}"
    if reason.check(SSL.Error):
        why = _openssl_reason(reason.value)
        if why == "certificate verify failed":
            return _why_not_trusted(connection)
        if why in _NOT_TLS:
            return f"the server does not speak TLS ({why})"
        alert = why.partition(" alert ")[2]
        # TLS 1.2 servers answer a missing certificate with a bare "handshake failure".
        sent_none = connection is not None and connection.get_certificate() is None
        if alert == "certificate required" or (alert == "handshake failure" and sent_none):
            return NEEDS_CLIENT_CERTIFICATE
        if alert in _CLIENT_CERTIFICATE_ALERTS:
            return f"the server rejected the client certificate ({alert})"
        return f"the server's TLS handshake failed: {why}"
    handshaking = connection is not None and connection.get_peer_finished() is None
    if reason.check(error.ConnectionDone, error.ConnectionLost) and handshaking:
        return "the server closed the connection during the TLS handshake (does it speak TLS?)"
    return None
