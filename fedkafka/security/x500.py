"""A certificate subject's name as Kafka names an mTLS client: Java's `X500Principal.getName()` (RFC 2253).

Kafka's DefaultKafkaPrincipalBuilder makes an SSL client's principal `User:` + the peer certificate subject's
`X500Principal.getName()`, so ACLs and super users written for a Kafka broker name clients that way. Java's
output, which this module reproduces from the certificate's DER (`javax.security.auth.x500`, JDK 17 and 25;
tests/security/test_certificate_principal_unit.py holds strings Java printed):
- RDNs from the last to the first of the certificate (most specific first), joined by `,`; the attributes of a
  multi-valued RDN in their DER order, joined by `+`;
- attribute types with an RFC 2253 keyword (CN, C, L, ST, O, OU, STREET, DC, UID) by keyword; any other type
  (emailAddress, serialNumber, title, ...) as its OID with `#` and the hex of the value's DER encoding
  (`1.2.840.113549.1.9.1=#1609...`); a keyword value that is not a string type also as `#` hex;
- string values decoded (UTF8String as UTF-8, BMPString as UTF-16BE, the 8-bit types as ISO-8859-1), with
  `,` `=` `+` `<` `>` `#` `;` `"` `\\` escaped by a backslash wherever they are, NUL as `\\00`, and leading and
  trailing spaces and carriage returns escaped by a backslash. Nothing else is escaped.
So a common name `admin,O=corp` is `CN=admin\\,O\\=corp`, never the `CN=admin,O=corp` of CN=admin in O=corp.
"""

from __future__ import annotations

from collections.abc import Iterator

RFC2253_KEYWORDS = {"2.5.4.3": "CN", "2.5.4.6": "C", "2.5.4.7": "L", "2.5.4.8": "ST", "2.5.4.10": "O",
                    "2.5.4.11": "OU", "2.5.4.9": "STREET", "0.9.2342.19200300.100.1.25": "DC",
                    "0.9.2342.19200300.100.1.1": "UID"}
# DER tags of the string types Java writes as text, and how it decodes each (AVA.isDerString, getCharset)
STRING_CHARSETS = {0x13: "latin-1", 0x14: "latin-1", 0x16: "latin-1", 0x1B: "latin-1",  # Printable, T61, IA5,
                   0x0C: "utf-8", 0x1E: "utf-16-be"}                                   # General; UTF8, BMP
ESCAPED = frozenset(',=+<>#;"\\')
SEQUENCE, SET, OID, EXPLICIT_0 = 0x30, 0x31, 0x06, 0xA0


class BadCertificate(ValueError):
    """DER that is not a certificate (or a name) as RFC 5280 lays it out."""


def der_elements(data: bytes) -> Iterator[tuple[int, bytes, bytes]]:
    """(tag, contents, the whole encoding) of each DER element in `data`, one after the other."""
    pos = 0
    while pos < len(data):
        if pos + 2 > len(data):
            raise BadCertificate("truncated DER")
        tag, length, head = data[pos], data[pos + 1], 2
        if length & 0x80:
            size = length & 0x7F
            length, head = int.from_bytes(data[pos + 2:pos + 2 + size], "big"), 2 + size
        end = pos + head + length
        if end > len(data):
            raise BadCertificate("truncated DER")
        yield tag, data[pos + head:end], data[pos:end]
        pos = end


def _only(data: bytes, tag: int) -> bytes:
    elements = list(der_elements(data))
    if len(elements) != 1 or elements[0][0] != tag:
        raise BadCertificate(f"expected one DER element of tag {tag:#x}")
    return elements[0][1]


def subject_der(certificate_der: bytes) -> bytes:
    """The contents of the subject Name of a DER certificate (its RDN sets, as the certificate has them)."""
    certificate = list(der_elements(_only(certificate_der, SEQUENCE)))
    if not certificate or certificate[0][0] != SEQUENCE:
        raise BadCertificate("no tbsCertificate")
    tbs = list(der_elements(certificate[0][1]))
    fields = tbs[1:] if tbs and tbs[0][0] == EXPLICIT_0 else tbs  # version, then serial, signature, issuer, ...
    if len(fields) < 5 or fields[4][0] != SEQUENCE:
        raise BadCertificate("no subject")
    return fields[4][1]


def oid_text(contents: bytes) -> str:
    """An OBJECT IDENTIFIER's dotted form."""
    arcs, value = [], 0
    for byte in contents:
        value = (value << 7) | (byte & 0x7F)
        if not byte & 0x80:
            arcs.append(value)
            value = 0
    if not arcs:
        raise BadCertificate("empty OBJECT IDENTIFIER")
    first = min(arcs[0] // 40, 2)
    return ".".join(str(arc) for arc in (first, arcs[0] - 40 * first, *arcs[1:]))


def escape_value(text: str) -> str:
    """An attribute value's text as Java's AVA.toRFC2253String escapes it."""
    escaped = ["\\00" if c == "\0" else "\\" + c if c in ESCAPED else c for c in text]
    lead = next((i for i, c in enumerate(escaped) if c not in (" ", "\r")), len(escaped))
    trail = next((i for i in range(len(escaped) - 1, -1, -1) if escaped[i] not in (" ", "\r")), -1)
    return "".join("\\" + c if i < lead or i > trail else c for i, c in enumerate(escaped))


def attribute_text(attribute: bytes) -> str:
    """`TYPE=value` of one AttributeTypeAndValue (SEQUENCE contents: the type's OID, then the value)."""
    elements = list(der_elements(attribute))
    if len(elements) != 2 or elements[0][0] != OID:
        raise BadCertificate("bad AttributeTypeAndValue")
    oid = oid_text(elements[0][1])
    tag, contents, whole = elements[1]
    keyword = RFC2253_KEYWORDS.get(oid)
    if keyword is None or tag not in STRING_CHARSETS:
        return f"{keyword or oid}=#{whole.hex()}"
    return f"{keyword}={escape_value(contents.decode(STRING_CHARSETS[tag], errors='replace'))}"


def rfc2253_name(name_contents: bytes) -> str:
    """Java's X500Principal.getName() of a Name (the contents of its SEQUENCE: RDN sets, least specific first)."""
    rdns = []
    for tag, rdn, _ in der_elements(name_contents):
        if tag != SET:
            raise BadCertificate("bad RelativeDistinguishedName")
        rdns.append("+".join(attribute_text(_only(whole, SEQUENCE)) for _, _, whole in der_elements(rdn)))
    return ",".join(reversed(rdns))
