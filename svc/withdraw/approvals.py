"""Approvals for custody: `ApprovalClaims` bound to the chain, sender, recipient, asset, amount,
nonce and fee cap of exactly one transaction (and its replacements), signed with the withdraw
service's Ed25519 key (kit approvals), which custody is configured to trust for WITHDRAWAL
approvals under `approval_key_id`."""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from finmesh.chain_gateway.v1 import chain_gateway_resources_pb2 as chain_resources
from finmesh.common.v1 import money_pb2
from finmesh.custody.v1 import custody_resources_pb2 as custody_resources

from svc.kit.approvals import ClaimsSigner, load_key

ISSUER = "withdraw"
REFERENCE_PREFIX = "withdrawal:"

__all__ = ["ISSUER", "REFERENCE_PREFIX", "ApprovalIssuer", "load_key"]


class ApprovalIssuer:
    """Signs the approval of one withdrawal transaction."""

    def __init__(self, key: Ed25519PrivateKey, key_id: str, lifetime_s: int, fee_cap_per_gas: int) -> None:
        self.signer = ClaimsSigner(key, key_id, lifetime_s)
        self.fee_cap_per_gas = fee_cap_per_gas

    def issue(
        self,
        *,
        approval_id: str,
        withdrawal_id: str,
        transaction: chain_resources.UnsignedTransaction,
        recipient: str,
        asset: str,
        amount: int,
        now_us: int,
    ) -> custody_resources.SignedApproval:
        claims = custody_resources.ApprovalClaims(
            approval_id=approval_id,
            purpose=custody_resources.APPROVAL_PURPOSE_WITHDRAWAL,
            issuer=ISSUER,
            reference=REFERENCE_PREFIX + withdrawal_id,
            chain=transaction.chain,
            chain_id=transaction.chain_id,
            from_address=transaction.from_address,
            to_address=recipient,
            amount=money_pb2.Money(asset=asset, amount=str(amount)),
            nonce=transaction.nonce,
            max_fee_per_gas=str(self.fee_cap_per_gas),
        )
        return self.signer.sign(claims, now_us)
