"""Real certificates for tests (fedkafka.security.pki), plus a CA that signed none of them."""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from fedkafka.security import pki as _pki


@dataclass(frozen=True)
class Pki(_pki.Pki):
    other_ca: Path  # a CA that signed none of the above


def make_pki(directory: Path) -> Pki:
    made = _pki.make_pki(directory, org="fedkafka-test", days=1)
    other = directory / "other-ca.pem"
    _pki.write_cert(_pki.make_ca("some-other-ca")[1], other)
    return Pki(**vars(made), other_ca=other)


def certificate_der(subject: x509.Name) -> bytes:
    """A self-signed DER certificate of `subject` (what ssl's getpeercert(binary_form=True) gives)."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    certificate = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
                   .public_key(key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
                   .sign(key, hashes.SHA256()))
    return certificate.public_bytes(serialization.Encoding.DER)
