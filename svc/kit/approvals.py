"""Approvals for custody, as the services that issue them (withdraw, deposit) sign them: claims
serialised deterministically and signed with the issuer's Ed25519 key, which custody trusts under
the key id (CustodySettings.approval_issuers)."""

from __future__ import annotations

import base64
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from finmesh.custody.v1 import custody_resources_pb2 as custody_resources
from google.protobuf import timestamp_pb2


def load_key(inline: str, path: Path | None) -> Ed25519PrivateKey | None:
    """The issuer key from the settings (32 raw bytes as base64); None when none is configured."""
    text = path.read_text().strip() if path is not None else inline.strip()
    if not text:
        return None
    return Ed25519PrivateKey.from_private_bytes(base64.b64decode(text, validate=True))


def _timestamp(time_us: int) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromMicroseconds(time_us)
    return stamp


class ClaimsSigner:
    """Signs claims with the issuer's key; each approval lives `lifetime_s` from its issue."""

    def __init__(self, key: Ed25519PrivateKey, key_id: str, lifetime_s: int) -> None:
        self.key = key
        self.key_id = key_id
        self.lifetime_s = lifetime_s

    def sign(self, claims: custody_resources.ApprovalClaims, now_us: int) -> custody_resources.SignedApproval:
        """The claims with their issue and expiry times, signed."""
        stamped = custody_resources.ApprovalClaims()
        stamped.CopyFrom(claims)
        stamped.issue_time.CopyFrom(_timestamp(now_us))
        stamped.expire_time.CopyFrom(_timestamp(now_us + self.lifetime_s * 1_000_000))
        body = stamped.SerializeToString(deterministic=True)
        return custody_resources.SignedApproval(
            claims=body, issuer_key_id=self.key_id, signature=self.key.sign(body)
        )
