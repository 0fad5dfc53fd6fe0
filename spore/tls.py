"""TLS for the control port and the connections to it, and plain words for why it failed.

TLS is a wrapper around a factory (server) or an endpoint (client), so the
protocols that frame and splice bytes never know it is there.  Verification
is Twisted's (``optionsForClientTLS``, which checks the host name with
service_identity); this module only loads the files, with errors that name
them, and explains a failed handshake afterwards.
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
from twisted.internet.endpoints import wrapClientTLS
from twisted.internet.interfaces import (
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
from twisted.protocols.tls import TLSMemoryBIOFactory, TLSMemoryBIOProtocol
from twisted.python.failure import Failure

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


def wrap_server_factory(factory: IProtocolFactory, options: IOpenSSLServerConnectionCreator) -> TLSMemoryBIOFactory:
    """A factory that speaks TLS around ``factory``'s protocols, on any listening endpoint."""
    return TLSMemoryBIOFactory(options, False, factory)


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
    return wrapClientTLS(options, endpoint)


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
