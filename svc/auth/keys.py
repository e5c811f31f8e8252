"""Token-signing key material: generation (ES256 on P-256, EdDSA on Ed25519), the public key as
a JWK (RFC 7517) with its RFC 7638 thumbprint as the key id, and access-token signing.

Private keys leave this module only as PKCS#8 DER sealed with AES-256-GCM (kit sealing), bound
to their kid, so a database dump alone signs nothing.
"""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from svc.kit.sealing import Sealer

ES256 = "ES256"
EDDSA = "EdDSA"
ALGORITHMS = (ES256, EDDSA)
PrivateKey = ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey
PublicKey = ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def generate(algorithm: str) -> PrivateKey:
    """A new private key for a JOSE algorithm."""
    if algorithm == ES256:
        return ec.generate_private_key(ec.SECP256R1())
    if algorithm == EDDSA:
        return ed25519.Ed25519PrivateKey.generate()
    raise ValueError(f"unsupported signing algorithm {algorithm!r}")


def public_jwk(key: PrivateKey, algorithm: str) -> dict[str, str]:
    """The public JWK of a private key, with `kid` (its thumbprint), `use` and `alg`."""
    public = key.public_key()
    if isinstance(public, ec.EllipticCurvePublicKey):
        numbers = public.public_numbers()
        members = {
            "crv": "P-256",
            "kty": "EC",
            "x": _b64url(numbers.x.to_bytes(32, "big")),
            "y": _b64url(numbers.y.to_bytes(32, "big")),
        }
    else:
        raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        members = {"crv": "Ed25519", "kty": "OKP", "x": _b64url(raw)}
    # RFC 7638: the required members only, sorted, no whitespace.
    thumbprint = hashlib.sha256(json.dumps(members, sort_keys=True, separators=(",", ":")).encode()).digest()
    return {**members, "kid": _b64url(thumbprint), "use": "sig", "alg": algorithm}


def public_key_of(jwk: dict[str, str]) -> PublicKey:
    """The public key of a JWK made by `public_jwk`."""

    def raw(member: str) -> bytes:
        text = jwk[member]
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))

    if jwk["kty"] == "EC":
        numbers = ec.EllipticCurvePublicNumbers(
            int.from_bytes(raw("x"), "big"), int.from_bytes(raw("y"), "big"), ec.SECP256R1()
        )
        return numbers.public_key()
    return ed25519.Ed25519PublicKey.from_public_bytes(raw("x"))


def _aad(kid: str) -> bytes:
    return b"auth.signing_key:" + kid.encode()


def seal_private(sealer: Sealer, key: PrivateKey, kid: str) -> bytes:
    """The private key as sealed PKCS#8 DER."""
    der = key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return sealer.seal(der, aad=_aad(kid))


def open_private(sealer: Sealer, sealed: bytes, kid: str) -> PrivateKey:
    """The private key of a sealed blob."""
    key = serialization.load_der_private_key(sealer.open(sealed, aad=_aad(kid)), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey), type(key)
    return key


def sign(claims: dict[str, Any], key: PrivateKey, algorithm: str, kid: str) -> str:
    """A compact JWS of the claims (RFC 9068 `at+jwt`), naming its key."""
    return jwt.encode(claims, key, algorithm=algorithm, headers={"kid": kid, "typ": "at+jwt"})


def public_pem(jwk: dict[str, str]) -> bytes:
    """The public key of a JWK as PEM (SubjectPublicKeyInfo), the kit TokenVerifier's format."""
    return public_key_of(jwk).public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
