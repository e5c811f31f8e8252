"""The stand-in token issuer: ES256 tokens with whatever claims a test needs, for the tokens the
real auth service would never issue (any subject, staff roles without their maker-checker grant,
expired, for another audience or issuer, signed by a key auth does not hold).

Given auth's own active key (from its ring) its tokens verify like auth's; with a key of its own
(`SigningKey.new()`) they are forgeries that the edge must refuse."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec

ISSUER = "finmesh-auth"
AUDIENCE = "finmesh"


@dataclass
class SigningKey:
    kid: str
    private: Any  # an EC P-256 private key

    @classmethod
    def new(cls) -> SigningKey:
        return cls(f"k-{uuid.uuid4().hex[:12]}", ec.generate_private_key(ec.SECP256R1()))


@dataclass
class Issuer:
    """Signs with the first of its keys unless told otherwise."""

    keys: list[SigningKey] = field(default_factory=lambda: [SigningKey.new()])

    def token(
        self,
        subject: str,
        *,
        roles: tuple[str, ...] = (),
        lifetime_s: int = 300,
        key: SigningKey | None = None,
        **claims: Any,
    ) -> str:
        now = int(time.time())
        signer = key or self.keys[0]
        payload = {
            "sub": subject,
            "roles": list(roles),
            "iss": ISSUER,
            "aud": AUDIENCE,
            "iat": now,
            "exp": now + lifetime_s,
            **claims,
        }
        return jwt.encode(payload, signer.private, algorithm="ES256", headers={"kid": signer.kid})
