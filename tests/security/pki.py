"""Real certificates for tests (fedkafka.security.pki), plus a CA that signed none of them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from fedkafka.security import pki as _pki


@dataclass(frozen=True)
class Pki(_pki.Pki):
    other_ca: Path  # a CA that signed none of the above


def make_pki(directory: Path) -> Pki:
    made = _pki.make_pki(directory, org="fedkafka-test", days=1)
    other = directory / "other-ca.pem"
    _pki.write_cert(_pki.make_ca("some-other-ca")[1], other)
    return Pki(**vars(made), other_ca=other)
