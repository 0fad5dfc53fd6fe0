"""Test certificates made on the spot: a CA, servers, clients, expired ones, as PEM files.

EC P-256 keys keep generation to about a millisecond per certificate, so a
whole set can be made once per session (see :func:`make_pki`).
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

DAY = datetime.timedelta(days=1)


@dataclass(frozen=True)
class Issued:
    """A certificate with its private key, and the intermediates between it and the root CA."""

    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey
    chain: tuple[x509.Certificate, ...] = ()

    def cert_pem(self) -> bytes:
        """The certificate then its chain, as a --certfile holds them."""
        return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in (self.cert, *self.chain))

    def key_pem(self) -> bytes:
        return self.key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )

    def write(self, directory: Path, name: str) -> tuple[str, str]:
        """Write ``name.pem`` and ``name.key`` into ``directory``; return their paths."""
        cert, key = directory / f"{name}.pem", directory / f"{name}.key"
        cert.write_bytes(self.cert_pem())
        key.write_bytes(self.key_pem())
        return str(cert), str(key)


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def _chain_under(ca: Issued) -> tuple[x509.Certificate, ...]:
    """What a certificate issued by ``ca`` must send along: ``ca`` and up, less the root."""
    if ca.cert.issuer == ca.cert.subject:  # the peer already has the root
        return ()
    return (ca.cert, *ca.chain)


def make_ca(common_name: str = "Spore Test CA", issuer: Issued | None = None) -> Issued:
    """A CA certificate: self-signed, or an intermediate when ``issuer`` is given."""
    key = ec.generate_private_key(ec.SECP256R1())
    signer = issuer.key if issuer else key
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(issuer.cert.subject if issuer else _name(common_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(_now() - DAY)
        .not_valid_after(_now() + 30 * DAY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    if issuer:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.key.public_key()), critical=False
        )
    return Issued(builder.sign(signer, hashes.SHA256()), key, _chain_under(issuer) if issuer else ())


def issue(
    ca: Issued,
    common_name: str = "spore",
    *,
    dns: tuple[str, ...] = (),
    ips: tuple[str, ...] = (),
    client: bool = False,
    valid_from: datetime.timedelta = -DAY,
    valid_until: datetime.timedelta = 30 * DAY,
    rsa_bits: int | None = None,
) -> Issued:
    """A leaf certificate signed by ``ca``, for a server (with SANs) or a client.

    ``valid_from`` and ``valid_until`` are offsets from now, so an expired
    certificate is ``valid_until=-DAY`` and a not-yet-valid one ``valid_from=DAY``.
    Its key is EC P-256, or RSA of ``rsa_bits`` (slower to sign with: a
    handshake costs the server more).
    """
    key = rsa.generate_private_key(65537, rsa_bits) if rsa_bits else ec.generate_private_key(ec.SECP256R1())
    usage = ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(_now() + valid_from)
        .not_valid_after(_now() + valid_until)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()), critical=False)
    )
    names = [x509.DNSName(d) for d in dns] + [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return Issued(builder.sign(ca.key, hashes.SHA256()), key, _chain_under(ca))


@dataclass(frozen=True)
class PKI:
    """Every certificate the TLS tests need, written once into a directory.

    Each attribute named for a certificate is a ``(certfile, keyfile)`` pair.
    """

    directory: Path
    ca: str
    other_ca: str
    server: tuple[str, str]
    chained_server: tuple[str, str]
    wrong_name_server: tuple[str, str]
    expired_server: tuple[str, str]
    future_server: tuple[str, str]
    other_ca_server: tuple[str, str]
    rsa_server: tuple[str, str]
    client: tuple[str, str]
    other_ca_client: tuple[str, str]


def make_pki(directory: Path) -> PKI:
    """Make a CA, another CA, and servers and clients signed by them, in ``directory``."""
    ca, other_ca = make_ca(), make_ca("Some Other CA")
    intermediate = make_ca("Spore Test Intermediate", issuer=ca)
    ca_file, other_ca_file = directory / "ca.pem", directory / "other-ca.pem"
    ca_file.write_bytes(ca.cert_pem())
    other_ca_file.write_bytes(other_ca.cert_pem())
    local = {"dns": ("localhost",), "ips": ("127.0.0.1", "::1")}
    return PKI(
        directory=directory,
        ca=str(ca_file),
        other_ca=str(other_ca_file),
        server=issue(ca, "localhost", **local).write(directory, "server"),
        chained_server=issue(intermediate, "localhost", **local).write(directory, "chained-server"),
        wrong_name_server=issue(ca, "elsewhere", dns=("elsewhere.example",), ips=("192.0.2.1",)).write(
            directory, "wrong-name-server"
        ),
        expired_server=issue(ca, "localhost", **local, valid_from=-10 * DAY, valid_until=-DAY).write(
            directory, "expired-server"
        ),
        future_server=issue(ca, "localhost", **local, valid_from=DAY).write(directory, "future-server"),
        other_ca_server=issue(other_ca, "localhost", **local).write(directory, "other-ca-server"),
        rsa_server=issue(ca, "localhost", **local, rsa_bits=3072).write(directory, "rsa-server"),
        client=issue(ca, "a client", client=True).write(directory, "client"),
        other_ca_client=issue(other_ca, "a stranger", client=True).write(directory, "other-ca-client"),
    )
