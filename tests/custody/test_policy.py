"""The signing policy through the contract: what an approval entitles a hot wallet or a deposit root
to sign, and every refusal with its precise reason."""

from __future__ import annotations

import uuid

import grpc
from finmesh.custody.v1 import custody_resources_pb2 as resources
from finmesh.custody.v1 import custody_service_pb2 as service

from svc.custody.hd import ExtendedPublic, evm_address
from tests.custody.conftest import (
    FEE_CAP,
    STEP_UP,
    TOKEN,
    TOKEN_ADDRESS,
    Custody,
    claims_for,
    native_transaction,
    refused,
    signing_refused,
    stamp,
    token_transaction,
)

RECIPIENT = "0x2222222222222222222222222222222222222222"
OTHER = "0x3333333333333333333333333333333333333333"


async def hot_wallet(custody: Custody) -> resources.CustodyWallet:
    return await custody.create_wallet(f"hot-{uuid.uuid4().hex[:8]}")


async def test_an_approval_signs_exactly_what_it_describes(custody: Custody) -> None:
    wallet = await hot_wallet(custody)
    transaction = native_transaction(wallet.address, RECIPIENT, 1_000, nonce=7)
    claims = claims_for(transaction, RECIPIENT, 1_000)
    approval = custody.withdraw.sign(claims)
    for changed, refusal in (
        (native_transaction(wallet.address, RECIPIENT, 1_001, nonce=7), "APPROVAL_MISMATCH"),
        (native_transaction(wallet.address, OTHER, 1_000, nonce=7), "APPROVAL_MISMATCH"),
        (native_transaction(wallet.address, RECIPIENT, 1_000, nonce=8), "APPROVAL_MISMATCH"),
        (
            native_transaction(wallet.address, RECIPIENT, 1_000, nonce=7, max_fee_per_gas=str(FEE_CAP + 1)),
            "FEE_ABOVE_CAP",
        ),
        (native_transaction(OTHER, RECIPIENT, 1_000, nonce=7), "MALFORMED_TRANSACTION"),
        (native_transaction(wallet.address, RECIPIENT, 1_000, nonce=7, chain_id=1), "MALFORMED_TRANSACTION"),
        (
            native_transaction(wallet.address, RECIPIENT, 1_000, nonce=7, data="0xdeadbeef"),
            "MALFORMED_TRANSACTION",
        ),
    ):
        info = await signing_refused(custody.sign(wallet.wallet_id, changed, approval=approval), refusal)
        assert info.metadata["record_id"]
    granted = await custody.sign(wallet.wallet_id, transaction, approval=approval)
    # Once it has been used, the approval is no more good for another amount or another address.
    for reused in (
        native_transaction(wallet.address, RECIPIENT, 2_000, nonce=7),
        native_transaction(wallet.address, OTHER, 1_000, nonce=7),
    ):
        info = await signing_refused(
            custody.sign(wallet.wallet_id, reused, approval=approval), "APPROVAL_MISMATCH"
        )
        assert info.metadata["record_id"]
    # A replacement of the same payment at a higher fee (within the cap), and a cancel to the
    # sender itself, both at the same nonce, are signed under the same approval.
    faster = native_transaction(
        wallet.address,
        RECIPIENT,
        1_000,
        nonce=7,
        max_fee_per_gas=str(FEE_CAP),
        max_priority_fee_per_gas="2000000000",
    )
    replaced = await custody.sign(wallet.wallet_id, faster, approval=approval)
    cancel = native_transaction(wallet.address, wallet.address, 0, nonce=7, max_fee_per_gas=str(FEE_CAP))
    cancelled = await custody.sign(wallet.wallet_id, cancel, approval=approval)
    assert len({granted.tx_hash, replaced.tx_hash, cancelled.tx_hash}) == 3
    await signing_refused(
        custody.sign(
            wallet.wallet_id,
            native_transaction(wallet.address, wallet.address, 0, nonce=8),
            approval=approval,
        ),
        "APPROVAL_MISMATCH",
    )


async def test_forged_foreign_expired_and_reused_approvals_are_refused(custody: Custody) -> None:
    wallet = await hot_wallet(custody)
    transaction = native_transaction(wallet.address, RECIPIENT, 900)
    claims = claims_for(transaction, RECIPIENT, 900)
    genuine = custody.withdraw.sign(claims)
    tampered = resources.SignedApproval()
    tampered.CopyFrom(genuine)
    tampered.claims = claims_for(transaction, OTHER, 900, approval_id=claims.approval_id).SerializeToString()
    await signing_refused(
        custody.sign(wallet.wallet_id, transaction, approval=tampered), "APPROVAL_SIGNATURE_INVALID"
    )
    await signing_refused(
        custody.sign(wallet.wallet_id, transaction, approval=custody.rogue.sign(claims)),
        "APPROVAL_ISSUER_UNKNOWN",
    )
    impostor = resources.SignedApproval()
    impostor.CopyFrom(custody.rogue.sign(claims))
    impostor.issuer_key_id = custody.withdraw.key_id  # a trusted key id does not make a signature genuine
    await signing_refused(
        custody.sign(wallet.wallet_id, transaction, approval=impostor), "APPROVAL_SIGNATURE_INVALID"
    )
    sweep_by_withdraw = claims_for(
        transaction, RECIPIENT, 900, purpose=resources.APPROVAL_PURPOSE_DEPOSIT_SWEEP
    )
    await signing_refused(
        custody.sign(wallet.wallet_id, transaction, approval=custody.withdraw.sign(sweep_by_withdraw)),
        "APPROVAL_ISSUER_UNKNOWN",
    )
    expired = claims_for(transaction, RECIPIENT, 900, issue_time=stamp(-120), expire_time=stamp(-60))
    await signing_refused(
        custody.sign(wallet.wallet_id, transaction, approval=custody.withdraw.sign(expired)),
        "APPROVAL_EXPIRED",
    )
    too_long = claims_for(transaction, RECIPIENT, 900, expire_time=stamp(3_700))
    await signing_refused(
        custody.sign(wallet.wallet_id, transaction, approval=custody.withdraw.sign(too_long)),
        "APPROVAL_EXPIRED",
    )
    await custody.sign(wallet.wallet_id, transaction, approval=genuine)
    # The issuer's id, once used, is bound to its claims: the same id with other claims is refused
    # even when those claims describe the transaction exactly.
    other = native_transaction(wallet.address, OTHER, 900, nonce=1)
    reissued = claims_for(other, OTHER, 900, approval_id=claims.approval_id)
    await signing_refused(
        custody.sign(wallet.wallet_id, other, approval=custody.withdraw.sign(reissued)), "APPROVAL_REUSED"
    )


async def test_missing_authorisation_and_unknown_wallet(custody: Custody) -> None:
    wallet = await hot_wallet(custody)
    transaction = native_transaction(wallet.address, RECIPIENT, 5)
    empty = service.SignTransactionRequest(
        request_id="sign-empty-1", wallet_id=wallet.wallet_id, transaction=transaction
    )
    await refused(custody.stub.SignTransaction(empty), grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT")
    await signing_refused(
        custody.sign(wallet.wallet_id, transaction, movement_id=str(uuid.uuid4())), "NO_AUTHORIZATION"
    )
    approval = custody.withdraw.sign(claims_for(transaction, RECIPIENT, 5))
    await refused(
        custody.sign(str(uuid.uuid4()), transaction, approval=approval),
        grpc.StatusCode.NOT_FOUND,
        "NOT_FOUND",
    )
    staff = custody.staff("operator-1", "operator")
    await refused(
        custody.stub.SignTransaction(
            service.SignTransactionRequest(
                request_id="sign-staff-1",
                wallet_id=wallet.wallet_id,
                transaction=transaction,
                authorization=resources.SigningAuthorization(approval=approval),
            ),
            metadata=staff,
        ),
        grpc.StatusCode.PERMISSION_DENIED,
        "PERMISSION_DENIED",
    )


async def test_erc20_recipient_and_amount_come_from_the_call_data(custody: Custody) -> None:
    wallet = await hot_wallet(custody)
    transaction = token_transaction(wallet.address, RECIPIENT, 250_000)
    to_contract = claims_for(transaction, TOKEN_ADDRESS, 0, asset=TOKEN)
    await signing_refused(
        custody.sign(wallet.wallet_id, transaction, approval=custody.withdraw.sign(to_contract)),
        "APPROVAL_MISMATCH",
    )
    as_native = claims_for(transaction, RECIPIENT, 250_000)
    await signing_refused(
        custody.sign(wallet.wallet_id, transaction, approval=custody.withdraw.sign(as_native)),
        "APPROVAL_MISMATCH",
    )
    claims = claims_for(transaction, RECIPIENT, 250_000, asset=TOKEN)
    signed = await custody.sign(wallet.wallet_id, transaction, approval=custody.withdraw.sign(claims))
    assert signed.signer_address == wallet.address
    unknown = token_transaction(wallet.address, RECIPIENT, 250_000)
    unknown.to_address = OTHER
    await signing_refused(
        custody.sign(wallet.wallet_id, unknown, approval=custody.withdraw.sign(claims)),
        "MALFORMED_TRANSACTION",
    )


async def test_disabled_wallet_refuses_and_needs_a_second_person_to_resume(custody: Custody) -> None:
    wallet = await hot_wallet(custody)
    transaction = native_transaction(wallet.address, RECIPIENT, 10)
    approval = custody.withdraw.sign(claims_for(transaction, RECIPIENT, 10))
    admin_2 = custody.staff("admin-2", "admin")
    disabled = await custody.stub.DisableCustodyWallet(
        service.DisableCustodyWalletRequest(
            request_id="disable-0001", wallet_id=wallet.wallet_id, reason="drill"
        ),
        metadata=admin_2,
    )
    assert (
        disabled.wallet.state == resources.CUSTODY_WALLET_STATE_DISABLED
        and disabled.wallet.disable_reason == "drill"
    )
    await signing_refused(custody.sign(wallet.wallet_id, transaction, approval=approval), "WALLET_DISABLED")
    enable = service.EnableCustodyWalletRequest(
        request_id="enable-0001", wallet_id=wallet.wallet_id, reason="drill over", step_up_token=STEP_UP
    )
    await refused(
        custody.stub.EnableCustodyWallet(enable, metadata=admin_2),
        grpc.StatusCode.PERMISSION_DENIED,
        "PERMISSION_DENIED",
    )
    await refused(
        custody.stub.EnableCustodyWallet(enable, metadata=custody.staff("operator-1", "operator")),
        grpc.StatusCode.PERMISSION_DENIED,
        "PERMISSION_DENIED",
    )
    enabled = await custody.stub.EnableCustodyWallet(enable, metadata=custody.staff("admin-1", "admin"))
    assert enabled.wallet.state == resources.CUSTODY_WALLET_STATE_ACTIVE and not enabled.wallet.disable_reason
    await refused(
        custody.stub.EnableCustodyWallet(
            service.EnableCustodyWalletRequest(
                request_id="enable-0002", wallet_id=wallet.wallet_id, reason="again", step_up_token=STEP_UP
            ),
            metadata=custody.staff("admin-1", "admin"),
        ),
        grpc.StatusCode.FAILED_PRECONDITION,
        "INVALID_STATE",
    )
    await custody.sign(wallet.wallet_id, transaction, approval=approval)


async def test_deposit_root_xpub_derives_the_addresses_custody_signs_for(custody: Custody) -> None:
    hot = await hot_wallet(custody)
    root = await custody.create_wallet(
        f"root-{uuid.uuid4().hex[:8]}", kind=resources.WALLET_KIND_DEPOSIT_ROOT
    )
    assert root.address == "" and root.key.backend == resources.KEY_BACKEND_SOFTWARE_ENVELOPE
    assert root.key.backend_reference.startswith("pkcs11:")  # the seed's envelope opens only in the HSM
    xpub = (
        await custody.stub.GetExtendedPublicKey(
            service.GetExtendedPublicKeyRequest(chain_family=resources.CHAIN_FAMILY_EVM)
        )
    ).extended_public_key
    assert xpub.account_path == "m/44'/60'/0'" and xpub.xpub.startswith("xpub")
    account = ExtendedPublic.parse(xpub.xpub)
    assert account.depth == 3 and xpub.fingerprint == account.fingerprint.hex()
    deposit_address = evm_address(account.derive((0, 17)).public_key)
    path = "m/44'/60'/0'/0/17"
    sweep = native_transaction(deposit_address, hot.address, 3_000)
    claims = claims_for(
        sweep, hot.address, 3_000, purpose=resources.APPROVAL_PURPOSE_DEPOSIT_SWEEP, issuer="deposit",
        derivation_path=path,
    )  # fmt: skip
    signed = await custody.sign(root.wallet_id, sweep, approval=custody.deposit.sign(claims), path=path)
    assert signed.signer_address == deposit_address
    await signing_refused(
        custody.sign(root.wallet_id, sweep, approval=custody.deposit.sign(claims), path="m/44'/60'/0'/0/18"),
        "MALFORMED_TRANSACTION",
    )
    await signing_refused(
        custody.sign(root.wallet_id, sweep, approval=custody.deposit.sign(claims)), "MALFORMED_TRANSACTION"
    )
    elsewhere = native_transaction(deposit_address, OTHER, 3_000, nonce=1)
    not_hot = claims_for(
        elsewhere, OTHER, 3_000, purpose=resources.APPROVAL_PURPOSE_DEPOSIT_SWEEP, issuer="deposit",
        derivation_path=path, nonce=1,
    )  # fmt: skip
    await signing_refused(
        custody.sign(root.wallet_id, elsewhere, approval=custody.deposit.sign(not_hot), path=path),
        "DESTINATION_NOT_ALLOWED",
    )
    withdrawal_from_root = claims_for(sweep, hot.address, 3_000)
    await signing_refused(
        custody.sign(root.wallet_id, sweep, approval=custody.withdraw.sign(withdrawal_from_root), path=path),
        "KIND_NOT_ALLOWED",
    )
    # Gas for an ERC-20 sweep: native coin from the hot wallet to the deposit address of the path.
    gas = native_transaction(hot.address, deposit_address, 50_000)
    top_up = claims_for(
        gas, deposit_address, 50_000, purpose=resources.APPROVAL_PURPOSE_GAS_TOP_UP, derivation_path=path
    )
    await custody.sign(hot.wallet_id, gas, approval=custody.withdraw.sign(top_up))
    astray = native_transaction(hot.address, OTHER, 50_000, nonce=1)
    wrong = claims_for(
        astray, OTHER, 50_000, purpose=resources.APPROVAL_PURPOSE_GAS_TOP_UP, derivation_path=path, nonce=1
    )
    await signing_refused(
        custody.sign(hot.wallet_id, astray, approval=custody.withdraw.sign(wrong)), "DESTINATION_NOT_ALLOWED"
    )
