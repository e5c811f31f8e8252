"""End-user access tokens for service tests: a real ES256 key pair, the public key written where a
service's `jwt_public_keys_file` reads it, and tokens signed like the auth service signs them
(iss `finmesh-auth`, aud `finmesh`, sub, roles, scope, sid)."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

TOKEN_LIFETIME_S = 300


class TokenIssuer:
    """Signs access tokens with one P-256 key; `public_key_file` holds its public key (PEM)."""

    def __init__(self, directory: Path, *, issuer: str = "finmesh-auth", audience: str = "finmesh") -> None:
        self._key = ec.generate_private_key(ec.SECP256R1())
        self.issuer = issuer
        self.audience = audience
        self.public_key_file = directory / "jwt-public-keys.pem"
        self.public_key_file.parent.mkdir(parents=True, exist_ok=True)
        self.public_key_file.write_bytes(
            self._key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )

    def token(self, subject: str, *roles: str, lifetime_s: int = TOKEN_LIFETIME_S) -> str:
        """A signed access token for `subject` with `roles`."""
        now = int(time.time())
        claims = {
            "iss": self.issuer,
            "aud": self.audience,
            "sub": subject,
            "roles": list(roles) or ["user"],
            "scope": "",
            "sid": str(uuid.uuid4()),
            "iat": now,
            "exp": now + lifetime_s,
        }
        return jwt.encode(claims, self._key, algorithm="ES256")

    def metadata(self, subject: str, *roles: str) -> tuple[tuple[str, str], ...]:
        """gRPC metadata carrying a token for `subject`."""
        return (("authorization", f"Bearer {self.token(subject, *roles)}"),)
