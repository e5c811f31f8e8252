"""Who is calling: the service identity of the mTLS peer, and the end user of a verified JWT."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import jwt

from svc.kit.context import EndUser
from svc.kit.errors import Unauthenticated

# Service identities are SPIFFE-style URIs in the certificate's subjectAltName, the same
# form Istio uses, so that policy reads the same inside and outside the mesh.
SPIFFE_PREFIX = "spiffe://finmesh.local/svc/"
USER_TOKEN_METADATA = "authorization"
JWT_ALGORITHMS = ("ES256", "EdDSA")
JWT_LEEWAY_S = 5


def spiffe_id(service: str) -> str:
    return SPIFFE_PREFIX + service


def peer_service(peer_identities: Iterable[bytes | str] | None) -> str:
    """The service named by the peer certificate's SPIFFE URI, or '' when there is none.

    `peer_identities` is what grpc reports for the peer: with TLS, the certificate's
    subjectAltNames (all of them when it has any), far cheaper per call than the full
    auth context, which carries the whole certificate.
    """
    for raw in peer_identities or ():
        value = raw.decode() if isinstance(raw, bytes) else str(raw)
        if value.startswith(SPIFFE_PREFIX):
            return value[len(SPIFFE_PREFIX) :]
    return ""


class TokenVerifier:
    """Verifies end-user access tokens (JWT, asymmetric) against the auth service's public keys."""

    def __init__(self, public_keys: list[Any], *, issuer: str, audience: str) -> None:
        self._keys = public_keys
        self._issuer = issuer
        self._audience = audience

    @classmethod
    def from_pem_file(cls, path: Path | None, *, issuer: str, audience: str) -> TokenVerifier:
        keys: list[Any] = []
        if path is not None:
            from cryptography.hazmat.primitives.serialization import load_pem_public_key

            pem = path.read_bytes()
            for block in pem.split(b"-----END PUBLIC KEY-----"):
                if b"-----BEGIN PUBLIC KEY-----" in block:
                    keys.append(load_pem_public_key(block + b"-----END PUBLIC KEY-----\n"))
        return cls(keys, issuer=issuer, audience=audience)

    def verify(self, token: str) -> EndUser:
        """The end user of a valid token; Unauthenticated for any invalid, expired or unknown token."""
        if not self._keys:
            raise Unauthenticated("this service accepts no end-user tokens: no verification keys configured")
        for key in self._keys:
            try:
                claims = jwt.decode(
                    token,
                    key,
                    algorithms=list(JWT_ALGORITHMS),
                    issuer=self._issuer,
                    audience=self._audience,
                    leeway=JWT_LEEWAY_S,
                    options={"require": ["sub", "exp", "iat"]},
                )
            except jwt.InvalidSignatureError:
                continue
            except jwt.PyJWTError as error:
                raise Unauthenticated(f"invalid access token: {error}") from None
            return EndUser(
                subject=str(claims["sub"]),
                roles=frozenset(claims.get("roles", ())),
                scopes=frozenset(str(claims.get("scope", "")).split()),
                session_id=str(claims.get("sid", "")),
                token=token,
            )
        raise Unauthenticated("invalid access token: signature does not match any known key")


def bearer_token(metadata: tuple[tuple[str, str | bytes], ...] | None) -> str:
    """The bearer token of the `authorization` metadata entry, or ''."""
    for key, value in metadata or ():
        if key == USER_TOKEN_METADATA:
            text = value.decode() if isinstance(value, bytes) else value
            scheme, _, token = text.partition(" ")
            if scheme.lower() != "bearer" or not token:
                raise Unauthenticated("authorization metadata must be 'Bearer <token>'")
            return token.strip()
    return ""
