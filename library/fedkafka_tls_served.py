#!/usr/bin/python
"""Ansible module: does a TLS listener serve the certificate in a file? (a handshake from the host)."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: fedkafka_tls_served
short_description: Check that a TLS listener serves the certificate of a file, waiting a little for it
description:
  - Opens TLS connections to O(host):O(port) from the managed host and compares the certificate the listener
    presents (its SHA-256 fingerprint) with the first certificate of the PEM file O(cert) on the host.
  - Tries again until they match or O(timeout) seconds pass. A proxy or name service looks at its certificate
    files at most every 5 seconds and serves changed ones by itself (docs/OPERATIONS.md, "Renewing TLS
    certificates"); one that still serves the old certificate after that is a process that cannot reload them
    (started before that version), which the roles restart.
  - The handshake verifies nothing (it only reads the certificate presented) and sends no data. A listener that
    requires a client certificate presents its own first; with TLS 1.2 it ends the handshake before the
    certificate can be read, so such a listener is read over TLS 1.3 (the default of both sides).
  - Read-only; never reports a change.
version_added: "0.1.0"
options:
  host:
    description: Address of the listener; C(0.0.0.0), C(::) and an empty one mean this host's loopback.
    type: str
    default: 127.0.0.1
  port:
    description: Port of an SSL or SASL_SSL listener.
    type: int
    required: true
  cert:
    description: PEM file on the host whose first certificate the listener must present.
    type: path
    required: true
  timeout:
    description: Seconds to keep trying (a connection every half second).
    type: float
    default: 15
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
author:
  - fedkafka
"""

EXAMPLES = r"""
- name: Check that the proxy serves the certificate just written
  fedkafka_tls_served:
    port: 9094
    cert: /var/lib/fedkafka/etc/tls/proxy.pem
  register: served

- name: Restart it when it does not
  ansible.builtin.debug:
    msg: "{{ served.msg }}"
  when: not served.serving
"""

RETURN = r"""
serving:
  description: The listener presented the certificate of O(cert) within O(timeout) seconds.
  type: bool
  returned: always
  sample: true
expected:
  description: SHA-256 fingerprint of the first certificate of O(cert).
  type: str
  returned: always
  sample: "3F:1A:...:9C"
served:
  description: SHA-256 fingerprint of the certificate the listener presented last; empty when no handshake worked.
  type: str
  returned: always
  sample: "77:0B:...:E2"
elapsed:
  description: Seconds spent.
  type: float
  returned: always
  sample: 0.02
msg:
  description: What was seen, in words (the last connection error when no handshake worked).
  type: str
  returned: always
"""

import hashlib  # noqa: E402
import socket  # noqa: E402
import ssl  # noqa: E402
import time  # noqa: E402

from ansible.module_utils.basic import AnsibleModule  # noqa: E402

LOOPBACK = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}  # a wildcard bind: read as loopback


def fingerprint(der: bytes) -> str:
    return ":".join(f"{b:02X}" for b in hashlib.sha256(der).digest())


def file_fingerprint(path: str) -> str:
    """The fingerprint of the first certificate of a PEM file (a chain's leaf)."""
    with open(path, encoding="ascii") as f:
        text = f.read()
    end = "-----END CERTIFICATE-----"
    start = text.find("-----BEGIN CERTIFICATE-----")
    if start < 0 or end not in text[start:]:
        raise ValueError(f"{path} holds no PEM certificate")
    return fingerprint(ssl.PEM_cert_to_DER_cert(text[start:text.index(end, start) + len(end)] + "\n"))


def presented(host: str, port: int, timeout: float) -> str:
    """The fingerprint of the certificate the listener presents in one handshake."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # only read: compared with the file below
    with socket.create_connection((host, port), timeout=timeout) as raw, ctx.wrap_socket(raw) as tls:
        der = tls.getpeercert(binary_form=True)
    if not der:
        raise ssl.SSLError("the listener presented no certificate")
    return fingerprint(der)


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "host": {"type": "str", "default": "127.0.0.1"},
            "port": {"type": "int", "required": True},
            "cert": {"type": "path", "required": True},
            "timeout": {"type": "float", "default": 15},
        },
        supports_check_mode=True,
    )
    p = module.params
    host = LOOPBACK.get(p["host"], p["host"])
    try:
        expected = file_fingerprint(p["cert"])
    except (OSError, ValueError) as exc:
        module.fail_json(msg=f"cannot read the certificate {p['cert']}: {exc}")
    started = time.monotonic()
    served, error = "", ""
    while True:
        try:
            served, error = presented(host, p["port"], 5.0), ""
        except (OSError, ssl.SSLError) as exc:  # not listening (yet), a handshake refused
            error = f"{type(exc).__name__}: {exc}"
        if served == expected or time.monotonic() - started >= p["timeout"]:
            break
        time.sleep(0.5)
    elapsed = round(time.monotonic() - started, 2)
    where = f"{host}:{p['port']}"
    if served == expected:
        msg = f"{where} serves the certificate of {p['cert']}"
    elif error:
        msg = f"no handshake with {where} worked within {p['timeout']} s: {error}"
    else:
        msg = f"{where} still serves another certificate than {p['cert']} after {p['timeout']} s"
    module.exit_json(changed=False, serving=served == expected, expected=expected, served=served, elapsed=elapsed,
                     msg=msg)


if __name__ == "__main__":
    main()
