"""The gateway's pure rules (svc/chain_gateway/domain.py): the digest custody signs, gas margins,
fee caps and the replacement raise."""

from __future__ import annotations

import pytest
from eth_account import Account
from eth_keys import keys

from svc.chain_gateway import domain
from svc.chain_gateway.config import ChainConfig, GasModel, ProviderConfig
from svc.chain_gateway.domain import Intent, TransferKind, TxType, Unsigned
from svc.kit import errors

GWEI = 10**9
CHAIN_ID = 5
RECIPIENT = "0x" + "11" * 20


def _config(gas_model: GasModel = GasModel.EIP1559, cap: int = 100 * GWEI) -> ChainConfig:
    return ChainConfig(
        display_name="Test",
        chain_id=CHAIN_ID,
        gas_model=gas_model,
        confirmation_depth=3,
        block_time_ms=1_000,
        native_symbol="ETH",
        fee_cap_per_gas=cap,
        providers=(ProviderConfig(name="p", endpoint="http://127.0.0.1:1"),),
    )


def _unsigned(kind: TxType, sender: str) -> Unsigned:
    eip1559 = kind is TxType.EIP1559
    return Unsigned(
        chain_id=CHAIN_ID,
        type=kind,
        from_address=sender,
        to_address=RECIPIENT,
        value=10,
        data=b"",
        nonce=3,
        gas_limit=21_000,
        gas_price=None if eip1559 else GWEI,
        max_fee_per_gas=10 * GWEI if eip1559 else None,
        max_priority_fee_per_gas=GWEI if eip1559 else None,
        intent=Intent(TransferKind.NATIVE, RECIPIENT, "test:ETH", 10),
    )


@pytest.mark.parametrize("kind", [TxType.EIP1559, TxType.LEGACY])
def test_the_signing_hash_is_the_digest_the_signature_covers(kind: TxType) -> None:
    """Custody may sign `signing_hash` directly (an HSM signs a digest): it must be exactly it."""
    account = Account.create()
    unsigned = _unsigned(kind, account.address.lower())
    signed = account.sign_transaction(unsigned.fields())
    parity = signed.v if kind is TxType.EIP1559 else signed.v - 35 - 2 * CHAIN_ID
    signature = keys.Signature(vrs=(parity, signed.r, signed.s))
    public = signature.recover_public_key_from_msg_hash(bytes.fromhex(unsigned.signing_hash()[2:]))
    assert public.to_checksum_address() == account.address


def test_gas_limit_margin_rounds_up() -> None:
    assert domain.gas_limit_with_margin(21_000, 2_000) == 25_200
    assert domain.gas_limit_with_margin(21_001, 2_000) == 25_202
    assert domain.gas_limit_with_margin(50_000, 0) == 50_000


def test_fees_are_capped_and_flagged() -> None:
    config = _config(cap=30 * GWEI)
    fees = domain.fees_for(
        config, estimated_gas=21_000, base_fee=20 * GWEI, priority_fee=2 * GWEI, gas_price=None,
        cap=30 * GWEI, block_number=7, now_us=1,
    )  # fmt: skip
    assert fees.max_fee_per_gas == 30 * GWEI and fees.capped  # 2 x 20 + 2 = 42 wanted
    assert fees.max_network_fee() == fees.gas_limit * 30 * GWEI
    assert fees.expected_network_fee() == 21_000 * 22 * GWEI
    legacy = domain.fees_for(
        _config(GasModel.LEGACY, cap=5 * GWEI), estimated_gas=21_000, base_fee=None, priority_fee=None,
        gas_price=3 * GWEI, cap=5 * GWEI, block_number=7, now_us=1,
    )  # fmt: skip
    assert legacy.gas_price == 3 * GWEI and not legacy.capped and legacy.max_fee_per_gas is None


def test_a_replacement_raises_every_fee_field_by_at_least_ten_percent() -> None:
    config = _config()
    original = _unsigned(TxType.EIP1559, "0x" + "22" * 20)
    market = domain.fees_for(
        config, estimated_gas=21_000, base_fee=GWEI, priority_fee=GWEI, gas_price=None,
        cap=config.fee_cap_per_gas, block_number=1, now_us=1,
    )  # fmt: skip
    fees = domain.replacement_fees(config, original, market, config.fee_cap_per_gas, None)
    assert fees.max_fee_per_gas is not None and fees.max_priority_fee_per_gas is not None
    assert fees.max_fee_per_gas >= 11 * GWEI and fees.max_priority_fee_per_gas >= GWEI * 11 // 10
    with pytest.raises(errors.LimitExceeded):
        domain.replacement_fees(config, original, market, 10 * GWEI, None)  # no room above 10 gwei
