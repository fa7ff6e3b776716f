"""Review rvsec: an mTLS client's principal is not escaped as RFC 2253 (and Kafka) escape it (failing on main).

Kafka's default principal builder names an SSL client `User:` + X500Principal.getName() (RFC 2253), which escapes
the special characters of an attribute value (`,` `+` `"` `\\` `<` `>` `;`, a leading `#` or space) with a
backslash. security/listeners.py `certificate_principal` joins the values unescaped, so a certificate whose
common name is `admin,O=corp` (no organization) is named exactly as the certificate of CN=admin in O=corp:
whoever gets such a name signed by the CA (self-service certificate portals let users pick their CN) holds the
other principal's ACLs, or its super-user rights.
"""

from __future__ import annotations

from cryptography import x509
from cryptography.x509.oid import NameOID

from fedkafka.security.listeners import certificate_principal
from security.pki import certificate_der

OIDS = {"commonName": NameOID.COMMON_NAME, "organizationName": NameOID.ORGANIZATION_NAME}


def _cert(*rdns: tuple[str, str]) -> bytes:
    """A client certificate (DER, as ssl.SSLSocket.getpeercert(binary_form=True) gives it) of this subject, its
    RDNs least specific first."""
    return certificate_der(x509.Name([x509.NameAttribute(OIDS[k], v) for k, v in rdns]))


def test_a_comma_in_a_common_name_does_not_make_another_principal():
    admin = certificate_principal(_cert(("organizationName", "corp"), ("commonName", "admin")))
    crafted = certificate_principal(_cert(("commonName", "admin,O=corp")))
    assert admin == "User:CN=admin,O=corp"
    assert crafted != admin


def test_special_characters_are_escaped_as_kafka_names_the_principal():
    # Java's X500Principal.getName() escapes `=` too (AVA.toRFC2253String), so Kafka names it CN=admin\,O\=corp
    assert certificate_principal(_cert(("commonName", "admin,O=corp"))) == "User:CN=admin\\,O\\=corp"
    assert certificate_principal(_cert(("commonName", "a+b"))) == "User:CN=a\\+b"
