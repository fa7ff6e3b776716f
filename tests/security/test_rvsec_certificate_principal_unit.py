"""Review rvsec: an mTLS client's principal is not escaped as RFC 2253 (and Kafka) escape it (failing on main).

Kafka's default principal builder names an SSL client `User:` + X500Principal.getName() (RFC 2253), which escapes
the special characters of an attribute value (`,` `+` `"` `\\` `<` `>` `;`, a leading `#` or space) with a
backslash. security/listeners.py `certificate_principal` joins the values unescaped, so a certificate whose
common name is `admin,O=corp` (no organization) is named exactly as the certificate of CN=admin in O=corp:
whoever gets such a name signed by the CA (self-service certificate portals let users pick their CN) holds the
other principal's ACLs, or its super-user rights.
"""

from __future__ import annotations

from fedkafka.security.listeners import certificate_principal


def _cert(*rdns: tuple[str, str]) -> dict:
    """A peercert dict as ssl.SSLSocket.getpeercert() gives it: the subject's RDNs, least specific first."""
    return {"subject": tuple(((k, v),) for k, v in rdns)}


def test_a_comma_in_a_common_name_does_not_make_another_principal():
    admin = certificate_principal(_cert(("organizationName", "corp"), ("commonName", "admin")))
    crafted = certificate_principal(_cert(("commonName", "admin,O=corp")))
    assert admin == "User:CN=admin,O=corp"
    assert crafted != admin


def test_special_characters_are_escaped_as_kafka_names_the_principal():
    assert certificate_principal(_cert(("commonName", "admin,O=corp"))) == "User:CN=admin\\,O=corp"
    assert certificate_principal(_cert(("commonName", "a+b"))) == "User:CN=a\\+b"
