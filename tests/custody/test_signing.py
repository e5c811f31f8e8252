"""Keys in the HSM and in envelopes, signed transactions that a real EVM (py-evm) accepts, and the
signature log: every request, granted or refused, is a record and an event."""

from __future__ import annotations

import uuid
from pathlib import Path

import coincurve
import grpc
import pkcs11
import pytest
from eth_tester import EthereumTester
from finmesh.custody.v1 import custody_resources_pb2 as resources
from finmesh.custody.v1 import custody_service_pb2 as service
from finmesh.events.v1 import custody_events_pb2
from pkcs11 import Attribute, ObjectClass

from svc.custody import store
from svc.custody.hd import evm_address
from tests.custody.conftest import (
    CHAIN_ID,
    Custody,
    claims_for,
    fund,
    native_transaction,
    refused,
    signing_refused,
    start_custody,
)
from tests.harness.softhsm import SoftHsmToken

RECIPIENT = "0x1111111111111111111111111111111111111111"
FUNDING_WEI = 10**18


async def test_hsm_key_is_generated_in_the_token_and_never_extractable(
    custody: Custody, softhsm: SoftHsmToken
) -> None:
    wallet = await custody.create_wallet(f"hot-{uuid.uuid4().hex[:8]}")
    assert wallet.key.backend == resources.KEY_BACKEND_HSM_PKCS11
    assert wallet.key.backend_reference == softhsm.label and wallet.key.curve == "secp256k1"
    public_key = bytes.fromhex(wallet.key.public_key[2:])
    assert len(public_key) == 33 and evm_address(public_key) == wallet.address
    await custody.stop()  # closes the service's session (and its login) before ours
    session = pkcs11.lib(softhsm.module).get_token(token_label=softhsm.label).open(user_pin=softhsm.user_pin)
    try:
        private = session.get_key(object_class=ObjectClass.PRIVATE_KEY, id=wallet.key.key_id.encode())
        assert private[Attribute.SENSITIVE] and private[Attribute.ALWAYS_SENSITIVE]
        assert not private[Attribute.EXTRACTABLE] and private[Attribute.NEVER_EXTRACTABLE]
        with pytest.raises(pkcs11.AttributeSensitive):
            private[Attribute.VALUE]
        public = session.get_key(object_class=ObjectClass.PUBLIC_KEY, id=wallet.key.key_id.encode())
        point = public[Attribute.EC_POINT]
        assert coincurve.PublicKey(point[2:]).format() == public_key
    finally:
        session.close()


@pytest.mark.parametrize("legacy", [False, True], ids=["eip1559", "legacy"])
async def test_hsm_signed_transaction_is_mined_by_a_real_evm(
    custody: Custody, evm: EthereumTester, legacy: bool
) -> None:
    wallet = await custody.create_wallet(f"hot-{uuid.uuid4().hex[:8]}")
    fund(evm, wallet.address, FUNDING_WEI)
    recipient = "0x" + uuid.uuid4().hex[:40].rjust(40, "1")
    transaction = native_transaction(wallet.address, recipient, 12_345, 0, legacy=legacy)
    approval = custody.withdraw.sign(claims_for(transaction, recipient, 12_345))
    signed = await custody.sign(wallet.wallet_id, transaction, approval=approval)
    assert signed.signer_address == wallet.address
    signature = signed.signature
    assert int(signature.s, 16) <= 0x7FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF5D576E7357A4501DDFE92F46681B20A0
    assert signature.v == (CHAIN_ID * 2 + 35 + signature.y_parity if legacy else signature.y_parity)
    tx_hash = evm.send_raw_transaction(signed.signed_transaction)
    assert tx_hash == signed.tx_hash
    receipt = evm.get_transaction_receipt(tx_hash)
    assert receipt["status"] == 1
    mined = evm.get_transaction_by_hash(tx_hash)
    assert mined["from"] == wallet.address and mined["nonce"] == 0
    assert evm.get_balance(recipient) == 12_345


async def test_retry_returns_the_same_signature_and_a_reused_key_is_refused(custody: Custody) -> None:
    wallet = await custody.create_wallet(f"hot-{uuid.uuid4().hex[:8]}")
    transaction = native_transaction(wallet.address, RECIPIENT, 500)
    approval = custody.withdraw.sign(claims_for(transaction, RECIPIENT, 500))
    first = await custody.sign(wallet.wallet_id, transaction, approval=approval, request_id="sign-retry-1")
    again = await custody.sign(wallet.wallet_id, transaction, approval=approval, request_id="sign-retry-1")
    assert again == first
    other = native_transaction(wallet.address, RECIPIENT, 500, nonce=1)
    await refused(
        custody.sign(wallet.wallet_id, other, approval=approval, request_id="sign-retry-1"),
        grpc.StatusCode.ALREADY_EXISTS,
        "IDEMPOTENCY_KEY_REUSED",
    )
    granted = await custody.events(custody_events_pb2.CustodySignatureGranted)
    assert [event.record.record_id for event in granted] == [first.record_id]


async def test_every_request_is_recorded_and_published(custody: Custody) -> None:
    wallet = await custody.create_wallet(f"hot-{uuid.uuid4().hex[:8]}")
    transaction = native_transaction(wallet.address, RECIPIENT, 700)
    claims = claims_for(transaction, RECIPIENT, 700)
    granted = await custody.sign(wallet.wallet_id, transaction, approval=custody.withdraw.sign(claims))
    info = await signing_refused(
        custody.sign(wallet.wallet_id, transaction, approval=custody.rogue.sign(claims)),
        "APPROVAL_ISSUER_UNKNOWN",
    )
    auditor = custody.staff("auditor-1", "auditor")
    record = (
        await custody.stub.GetSignatureRecord(
            service.GetSignatureRecordRequest(record_id=granted.record_id), metadata=auditor
        )
    ).record
    assert record.outcome == resources.SIGNATURE_OUTCOME_GRANTED and record.tx_hash == granted.tx_hash
    assert (record.to_address, record.amount.asset, record.amount.amount) == (
        RECIPIENT,
        "evm-test:ETH",
        "700",
    )
    assert record.approval_id == claims.approval_id and record.reference == claims.reference
    assert record.wallet_kind == resources.WALLET_KIND_HOT and record.key_id == wallet.key.key_id
    listed = await custody.stub.ListSignatureRecords(
        service.ListSignatureRecordsRequest(wallet_id=wallet.wallet_id, page_size=1), metadata=auditor
    )
    assert len(listed.records) == 1 and listed.next_page_token
    refusal = listed.records[0]
    assert refusal.record_id == info.metadata["record_id"]
    assert refusal.outcome == resources.SIGNATURE_OUTCOME_REFUSED and not refusal.tx_hash
    assert refusal.refusal_reason == resources.REFUSAL_REASON_APPROVAL_ISSUER_UNKNOWN
    rest = await custody.stub.ListSignatureRecords(
        service.ListSignatureRecordsRequest(wallet_id=wallet.wallet_id, page_token=listed.next_page_token),
        metadata=auditor,
    )
    assert [r.record_id for r in rest.records] == [granted.record_id] and not rest.next_page_token
    refused_events = await custody.events(custody_events_pb2.CustodySignatureRefused)
    assert [event.record.record_id for event in refused_events] == [refusal.record_id]
    await refused(
        custody.stub.ListSignatureRecords(
            service.ListSignatureRecordsRequest(), metadata=custody.staff("u", "user")
        ),
        grpc.StatusCode.PERMISSION_DENIED,
        "PERMISSION_DENIED",
    )


@pytest.mark.embedded
async def test_software_envelope_keys_sign_under_the_embedded_default(
    database_url: str, tmp_path: Path, evm: EthereumTester
) -> None:
    running = await start_custody(database_url, tmp_path, None)
    try:
        wallet = await running.create_wallet("hot-software")
        assert wallet.key.backend == resources.KEY_BACKEND_SOFTWARE_ENVELOPE
        assert wallet.key.backend_reference.startswith("k")  # the file master key's id
        await refused(
            running.create_wallet("hot-hsm", backend=resources.KEY_BACKEND_HSM_PKCS11),
            grpc.StatusCode.INVALID_ARGUMENT,
            "INVALID_ARGUMENT",
        )
        fund(evm, wallet.address, FUNDING_WEI)
        recipient = "0x" + uuid.uuid4().hex[:40].rjust(40, "2")
        transaction = native_transaction(wallet.address, recipient, 42)
        signed = await running.sign(
            wallet.wallet_id,
            transaction,
            approval=running.withdraw.sign(claims_for(transaction, recipient, 42)),
        )
        assert evm.send_raw_transaction(signed.signed_transaction) == signed.tx_hash
        assert evm.get_balance(recipient) == 42
        async with running.app.database.transaction() as session:
            stored = await store.wallet_by_id(session, wallet.wallet_id)
        assert (
            stored is not None
            and stored.sealed
            and bytes.fromhex(wallet.key.public_key[2:]) == stored.public_key
        )
    finally:
        await running.stop()


async def test_a_failing_hsm_signs_nothing_and_is_recorded(custody: Custody, softhsm: SoftHsmToken) -> None:
    wallet = await custody.create_wallet(f"hot-{uuid.uuid4().hex[:8]}")
    transaction = native_transaction(wallet.address, RECIPIENT, 31)
    approval = custody.withdraw.sign(claims_for(transaction, RECIPIENT, 31))
    # The service is logged in to the token: a session of ours shares that login, and removes the
    # wallet's private key from under it (an HSM that lost the key, or a broken partition).
    session = pkcs11.lib(softhsm.module).get_token(token_label=softhsm.label).open(rw=True)
    try:
        session.get_key(object_class=ObjectClass.PRIVATE_KEY, id=wallet.key.key_id.encode()).destroy()
    finally:
        session.close()
    info = await refused(
        custody.sign(wallet.wallet_id, transaction, approval=approval, request_id="sign-broken-1"),
        grpc.StatusCode.UNAVAILABLE,
        "DEPENDENCY_UNAVAILABLE",
    )
    record = (
        await custody.stub.GetSignatureRecord(
            service.GetSignatureRecordRequest(record_id=info.metadata["record_id"]),
            metadata=custody.staff("auditor-1", "auditor"),
        )
    ).record
    assert record.outcome == resources.SIGNATURE_OUTCOME_BACKEND_ERROR and not record.tx_hash
    assert "PKCS#11" in record.message
    refused_events = await custody.events(custody_events_pb2.CustodySignatureRefused)
    assert [event.record.record_id for event in refused_events] == [record.record_id]
