"""The approvals the withdraw service issues are exactly what custody verifies: its Ed25519 key,
the claims bound to one transaction's chain, sender, recipient, asset, amount, nonce and fee cap."""

from __future__ import annotations

import base64
import time
import uuid

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, PublicFormat
from finmesh.chain_gateway.v1 import chain_gateway_resources_pb2 as chain_resources
from finmesh.custody.v1 import custody_resources_pb2 as custody_resources

from svc.custody import approvals as custody_approvals
from svc.custody.config import IssuerSettings
from svc.custody.domain import Purpose, Refused
from svc.withdraw import domain
from svc.withdraw.approvals import ApprovalIssuer, load_key

SENDER = "0x1111111111111111111111111111111111111111"
RECIPIENT = "0x2222222222222222222222222222222222222222"


def _keys() -> tuple[str, str]:
    key = Ed25519PrivateKey.generate()
    private = base64.b64encode(key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())).decode()
    public = base64.b64encode(key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)).decode()
    return private, public


def _transaction(nonce: int = 7) -> chain_resources.UnsignedTransaction:
    return chain_resources.UnsignedTransaction(
        chain="hardhat",
        chain_id=31337,
        type=chain_resources.TRANSACTION_TYPE_EIP1559,
        from_address=SENDER,
        to_address=RECIPIENT,
        value="1000",
        data="0x",
        nonce=nonce,
        gas_limit=21_000,
        max_fee_per_gas="3000000000",
        max_priority_fee_per_gas="1000000000",
    )


def test_custody_verifies_an_issued_approval_with_every_binding() -> None:
    private, public = _keys()
    key = load_key(private, None)
    assert key is not None
    issuer = ApprovalIssuer(key, "withdraw-1", lifetime_s=600, fee_cap_per_gas=500 * 10**9)
    withdrawal_id = str(uuid.uuid4())
    approval_id = domain.approval_id_for(withdrawal_id, 0)
    signed = issuer.issue(
        approval_id=approval_id,
        withdrawal_id=withdrawal_id,
        transaction=_transaction(),
        recipient=RECIPIENT,
        asset="hardhat:ETH",
        amount=1000,
        now_us=time.time_ns() // 1000,
    )
    trusted = custody_approvals.trusted_issuers(
        {"withdraw-1": IssuerSettings(issuer="withdraw", public_key=public, purposes=[1])}
    )
    claims = custody_approvals.verify(signed, trusted, lifetime_max_s=3600)
    assert claims.purpose is Purpose.WITHDRAWAL and claims.approval_id == approval_id
    assert (claims.chain, claims.chain_id, claims.from_address, claims.to_address) == (
        "hardhat",
        31337,
        SENDER,
        RECIPIENT,
    )
    assert (claims.asset, claims.amount, claims.nonce, claims.max_fee_per_gas) == (
        "hardhat:ETH",
        1000,
        7,
        500 * 10**9,
    )
    assert claims.reference == f"withdrawal:{withdrawal_id}"
    assert claims.expire_time_us - claims.issue_time_us == 600 * 1_000_000
    # One approval id per transaction of a withdrawal, the same after a restart.
    assert domain.approval_id_for(withdrawal_id, 1) != approval_id
    assert domain.approval_id_for(withdrawal_id, 0) == approval_id


def test_custody_refuses_an_approval_whose_bytes_were_changed_or_whose_key_it_does_not_trust() -> None:
    private, public = _keys()
    key = load_key(private, None)
    assert key is not None
    signed = ApprovalIssuer(key, "withdraw-1", 600, 10**11).issue(
        approval_id=str(uuid.uuid4()),
        withdrawal_id=str(uuid.uuid4()),
        transaction=_transaction(),
        recipient=RECIPIENT,
        asset="hardhat:ETH",
        amount=1000,
        now_us=time.time_ns() // 1000,
    )
    claims = custody_resources.ApprovalClaims.FromString(signed.claims)
    claims.amount.amount = "1000000"
    tampered = custody_resources.SignedApproval(
        claims=claims.SerializeToString(deterministic=True),
        issuer_key_id="withdraw-1",
        signature=signed.signature,
    )
    _, other_public = _keys()
    trusted = custody_approvals.trusted_issuers(
        {"withdraw-1": IssuerSettings(issuer="withdraw", public_key=public, purposes=[1])}
    )
    with pytest.raises(Refused):
        custody_approvals.verify(tampered, trusted, lifetime_max_s=3600)
    stranger = custody_approvals.trusted_issuers(
        {"withdraw-1": IssuerSettings(issuer="withdraw", public_key=other_public, purposes=[1])}
    )
    with pytest.raises(Refused):
        custody_approvals.verify(signed, stranger, lifetime_max_s=3600)


def test_no_key_configured_means_no_issuer() -> None:
    assert load_key("", None) is None
