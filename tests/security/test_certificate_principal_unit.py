"""An mTLS client's principal is the one a Kafka broker gives it, to the character (security/x500.py).

Kafka's DefaultKafkaPrincipalBuilder names an SSL client `User:` + X500Principal.getName() of its certificate's
subject. Each expected string below is what Java printed for the same subject DER (javax.security.auth.x500.
X500Principal, OpenJDK 17.0.15 and Temurin 25; the BMPString case is 25's: 17 decodes a BMPString as UTF-8, a JDK
bug since fixed). `cryptography`'s Name.rfc4514_string() differs from it: it does not escape `=` or an inner
`#`, and writes emailAddress and other types without a keyword as text, where Java writes `#` and their DER.
"""

from __future__ import annotations

import pytest
from cryptography import x509
from cryptography.x509.name import _ASN1Type
from cryptography.x509.oid import NameOID, ObjectIdentifier

from fedkafka.security.listeners import certificate_principal
from fedkafka.security.x500 import BadCertificate
from security.pki import certificate_der

CN, ORG, OU, L, ST, C = (NameOID.COMMON_NAME, NameOID.ORGANIZATION_NAME, NameOID.ORGANIZATIONAL_UNIT_NAME,
                       NameOID.LOCALITY_NAME, NameOID.STATE_OR_PROVINCE_NAME, NameOID.COUNTRY_NAME)
DC, UID, EMAIL, STREET = NameOID.DOMAIN_COMPONENT, NameOID.USER_ID, NameOID.EMAIL_ADDRESS, NameOID.STREET_ADDRESS


def _name(*rdns) -> x509.Name:
    """RDNs least specific first, as in the certificate; a list is one multi-valued RDN."""
    return x509.Name([x509.RelativeDistinguishedName([x509.NameAttribute(*a) for a in rdn])
                      if isinstance(rdn, list) else x509.RelativeDistinguishedName([x509.NameAttribute(*rdn)])
                      for rdn in rdns])


# (subject, what Java's X500Principal.getName() printed for it)
JAVA_NAMES = {
    "keywords": (_name((C, "US"), (ST, "CA"), (L, "SF"), (ORG, "corp"), (OU, "eng"), (CN, "admin")),
                 "CN=admin,OU=eng,O=corp,L=SF,ST=CA,C=US"),
    "comma": (_name((CN, "admin,O=corp")), "CN=admin\\,O\\=corp"),
    "every escaped character": (_name((CN, 'x,y+z"q\\r<s>t;u=v#w')), 'CN=x\\,y\\+z\\"q\\\\r\\<s\\>t\\;u\\=v\\#w'),
    "leading #": (_name((CN, "#abc")), "CN=\\#abc"),
    "leading and trailing spaces": (_name((CN, "  ab  ")), "CN=\\ \\ ab\\ \\ "),
    "a space only": (_name((CN, " ")), "CN=\\ "),
    "carriage returns at the ends": (_name((CN, "\rab\r")), "CN=\\\rab\\\r"),
    "control characters inside": (_name((CN, "a\tb\nc\x01d")), "CN=a\tb\nc\x01d"),
    "NUL": (_name((CN, "a\0b")), "CN=a\\00b"),
    "non-ASCII": (_name((CN, "Jürgen Ω 漢")), "CN=Jürgen Ω 漢"),
    "no-break spaces": (_name((CN, "\u00a0a\u00a0")), "CN=\u00a0a\u00a0"),
    "DC, UID": (_name((DC, "com"), (DC, "example"), (UID, "jdoe"), (CN, "J Doe")),
                "CN=J Doe,UID=jdoe,DC=example,DC=com"),
    "STREET": (_name((STREET, "1 Main St")), "STREET=1 Main St"),
    "emailAddress (IA5String)": (_name((ORG, "corp"), (EMAIL, "a@b.example"), (CN, "x")),
                                 "CN=x,1.2.840.113549.1.9.1=#160b6140622e6578616d706c65,O=corp"),
    "emailAddress (UTF8String)": (_name((EMAIL, "a@b.example", _ASN1Type.UTF8String)),
                                  "1.2.840.113549.1.9.1=#0c0b6140622e6578616d706c65"),
    "multi-valued RDN": (_name((ORG, "corp"), [(CN, "alice"), (OU, "eng")]), "OU=eng+CN=alice,O=corp"),
    "multi-valued RDN of three": (_name([(OU, "z"), (CN, "a"), (UID, "u")]), "CN=a+OU=z+UID=u"),
    "serialNumber": (_name((NameOID.SERIAL_NUMBER, "1234"), (CN, "x")), "CN=x,2.5.4.5=#130431323334"),
    "title": (_name((NameOID.TITLE, "boss")), "2.5.4.12=#0c04626f7373"),
    "givenName, surname": (_name((NameOID.GIVEN_NAME, "Al"), (NameOID.SURNAME, "Smith")),
                           "2.5.4.4=#0c05536d697468,2.5.4.42=#0c02416c"),
    "an OID no one names": (_name((ObjectIdentifier("1.2.3.4.5"), "hello")), "1.2.3.4.5=#0c0568656c6c6f"),
    "BMPString": (_name((CN, "Jürgen Ω", _ASN1Type.BMPString)), "CN=Jürgen Ω"),
    "UniversalString (no text form in Java)": (_name((CN, "Jü", _ASN1Type.UniversalString)),
                                               "CN=#1c080000004a000000fc"),
    "T61String": (_name((CN, "abc", _ASN1Type.T61String)), "CN=abc"),
    "PrintableString": (_name((CN, "abc def", _ASN1Type.PrintableString)), "CN=abc def"),
    "IA5String": (_name((CN, "abc", _ASN1Type.IA5String)), "CN=abc"),
    "DEL": (_name((CN, "a\x7fb")), "CN=a\x7fb"),
}


@pytest.mark.parametrize("case", JAVA_NAMES)
def test_the_principal_is_javas_rfc2253_name_of_the_subject(case):
    subject, java = JAVA_NAMES[case]
    assert certificate_principal(certificate_der(subject)) == "User:" + java


def test_a_crafted_common_name_never_names_another_principal():
    crafted = [certificate_der(_name((CN, cn))) for cn in ("admin,O=corp", "admin+O=corp", "admin\\,O=corp")]
    admin = certificate_principal(certificate_der(_name((ORG, "corp"), (CN, "admin"))))
    assert admin == "User:CN=admin,O=corp"
    assert admin not in {certificate_principal(der) for der in crafted}
    multi_valued = certificate_principal(certificate_der(_name([(ORG, "corp"), (CN, "admin")])))
    assert multi_valued == "User:O=corp+CN=admin"  # Java: the DER order of the set (cryptography sorts it)


def test_no_certificate_no_principal_and_garbage_is_refused():
    assert certificate_principal(None) is None
    assert certificate_principal(b"") is None
    with pytest.raises(BadCertificate):
        certificate_principal(b"\x30\x05\x30\x03")
