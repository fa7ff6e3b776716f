"""An RSA signing key, its JWKS file, and JWTs signed with it (or with a key the JWKS does not hold)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa

ISSUER = "https://idp.test"
AUDIENCE = "fedkafka"


class Issuer:
    def __init__(self, jwks_file: Path, kid: str = "k1"):
        self.kid = kid
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self.key.public_key()))
        jwks_file.write_text(json.dumps({"keys": [jwk | {"kid": kid, "use": "sig", "alg": "RS256"}]}))
        self.jwks_file = jwks_file

    def token(self, sub: str = "alice", lifetime_s: float = 300, iss: str = ISSUER, aud: str = AUDIENCE,
              foreign: bool = False, kid: str | None = None) -> str:
        now = int(time.time())
        claims = {"sub": sub, "iss": iss, "aud": aud, "iat": now, "exp": now + int(lifetime_s)}
        return jwt.encode(claims, self.other_key if foreign else self.key, algorithm="RS256",
                          headers={"kid": kid or self.kid})


def client_message(token: str) -> bytes:
    return f"n,,\x01auth=Bearer {token}\x01\x01".encode()
