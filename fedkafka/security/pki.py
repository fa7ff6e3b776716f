"""A small certificate authority for one machine: a CA and certificates for 127.0.0.1/localhost.

`fedkafka local up --security sasl_ssl` and the tests make theirs here (EC P-256 keys, unencrypted PKCS#8 PEM,
written 0600). The CA's key is never written: nothing signs anything later (a cluster added afterwards reuses the
server certificate, which names 127.0.0.1 and localhost).
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass(frozen=True)
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def _name(cn: str, org: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, org), x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def write_private_key(key, path: Path) -> None:
    """Created 0600 before the key is written: never readable by others, not even for a moment."""
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption()))


def write_cert(cert: x509.Certificate, path: Path) -> None:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def make_ca(cn: str, org: str = "fedkafka-test", days: int = 2):
    """(key, certificate) of a self-signed CA."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(_name(cn, org)).issuer_name(_name(cn, org))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256()))
    return key, cert


def make_leaf(ca_key, ca_cert, cn: str, usage, sans=(), org: str = "fedkafka-test", days: int = 1):
    """(key, certificate) signed by the CA for one extended key usage (server or client auth)."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    builder = (x509.CertificateBuilder().subject_name(_name(cn, org)).issuer_name(ca_cert.subject)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5))
               .not_valid_after(now + datetime.timedelta(days=days))
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
               .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
               .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False))
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(list(sans)), critical=False)
    return key, builder.sign(ca_key, hashes.SHA256())


LOOPBACK_SANS = (x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1")))


def expiry(cert_path: Path) -> datetime.datetime:
    """When the PEM certificate at `cert_path` stops being valid (UTC)."""
    return x509.load_pem_x509_certificate(cert_path.read_bytes()).not_valid_after_utc


def make_pki(directory: Path, org: str = "fedkafka-test", days: int = 1) -> Pki:
    """A CA (valid one day longer than its certificates), a server certificate for 127.0.0.1/localhost and a
    client certificate (CN client-app), in `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_key, ca_cert = make_ca(f"{org}-ca", org, days + 1)
    server_key, server_cert = make_leaf(ca_key, ca_cert, "localhost", ExtendedKeyUsageOID.SERVER_AUTH, LOOPBACK_SANS,
                                        org, days)
    client_key, client_cert = make_leaf(ca_key, ca_cert, "client-app", ExtendedKeyUsageOID.CLIENT_AUTH, (), org, days)
    pki = Pki(directory / "ca.pem", directory / "server.pem", directory / "server.key", directory / "client.pem",
              directory / "client.key")
    write_cert(ca_cert, pki.ca)
    write_cert(server_cert, pki.server_cert)
    write_cert(client_cert, pki.client_cert)
    write_private_key(server_key, pki.server_key)
    write_private_key(client_key, pki.client_key)
    return pki
