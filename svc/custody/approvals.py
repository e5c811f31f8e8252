"""Approvals issued by the withdraw and deposit flows: Ed25519 signatures over serialised
`ApprovalClaims`, verified against the issuer keys custody is configured to trust.

Verification order is what makes the refusal reasons precise: the key must be known, the
signature must verify over the exact bytes, only then are the claims parsed and validated, the
issuer and purpose checked against what the key may approve, and the lifetime bounded.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from finmesh.custody.v1 import custody_resources_pb2 as resources
from google.protobuf.message import DecodeError

from svc.custody.config import IssuerSettings
from svc.custody.domain import Claims, Purpose, Refusal, Refused
from svc.kit import errors
from svc.kit.validation import validate


@dataclass(frozen=True)
class TrustedIssuer:
    key_id: str
    issuer: str
    public_key: Ed25519PublicKey
    purposes: frozenset[Purpose]


def trusted_issuers(configured: Mapping[str, IssuerSettings]) -> dict[str, TrustedIssuer]:
    """The configured issuer keys, decoded (a bad key stops start-up)."""
    issuers = {}
    for key_id, settings in configured.items():
        raw = base64.b64decode(settings.public_key, validate=True)
        issuers[key_id] = TrustedIssuer(
            key_id,
            settings.issuer,
            Ed25519PublicKey.from_public_bytes(raw),
            frozenset(Purpose(purpose) for purpose in settings.purposes),
        )
    return issuers


def claims_digest(claims: bytes) -> str:
    """SHA-256 of the claims' bytes: an approval id is bound to exactly these claims."""
    return hashlib.sha256(claims).hexdigest()


def verify(
    approval: resources.SignedApproval, issuers: Mapping[str, TrustedIssuer], lifetime_max_s: int
) -> Claims:
    """The verified claims of an approval; Refused with the precise reason otherwise."""
    issuer = issuers.get(approval.issuer_key_id)
    if issuer is None:
        raise Refused(
            Refusal.APPROVAL_ISSUER_UNKNOWN, f"issuer key {approval.issuer_key_id!r} is not trusted"
        )
    try:
        issuer.public_key.verify(approval.signature, approval.claims)
    except InvalidSignature:
        raise Refused(
            Refusal.APPROVAL_SIGNATURE_INVALID, "the approval's signature does not verify"
        ) from None
    try:
        message = resources.ApprovalClaims.FromString(approval.claims)
        validate(message)
    except (DecodeError, errors.InvalidArgument) as error:
        raise Refused(
            Refusal.APPROVAL_SIGNATURE_INVALID, f"the signed claims are not valid: {error}"
        ) from None
    purpose = Purpose(message.purpose)
    if message.issuer != issuer.issuer or purpose not in issuer.purposes:
        raise Refused(
            Refusal.APPROVAL_ISSUER_UNKNOWN,
            f"key {issuer.key_id!r} may not approve {purpose.name} for issuer {message.issuer!r}",
        )
    issue_us = message.issue_time.ToMicroseconds()
    expire_us = message.expire_time.ToMicroseconds()
    if expire_us - issue_us > lifetime_max_s * 1_000_000 or expire_us <= issue_us:
        raise Refused(
            Refusal.APPROVAL_EXPIRED, f"the approval's lifetime is not within (0, {lifetime_max_s}] seconds"
        )
    return Claims(
        approval_id=message.approval_id,
        purpose=purpose,
        issuer=message.issuer,
        reference=message.reference,
        chain=message.chain,
        chain_id=message.chain_id,
        from_address=message.from_address,
        to_address=message.to_address,
        asset=message.amount.asset,
        amount=int(message.amount.amount),
        nonce=message.nonce,
        max_fee_per_gas=int(message.max_fee_per_gas),
        derivation_path=message.derivation_path,
        issue_time_us=issue_us,
        expire_time_us=expire_us,
    )
