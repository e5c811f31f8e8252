"""EVM transactions as custody sees them: the signing hash and the transfer a transaction makes,
re-derived from its fields, and an ECDSA signature from a key backend turned into an Ethereum one.

Serialisation is eth-account's (legacy with EIP-155, and EIP-1559 type 2), so a signed
transaction is exactly what a node accepts. The transfer is decoded from `to`, `value` and `data`
(a native payment, an ERC-20 `transfer(address,uint256)`, or a zero-value cancel to the sender);
any other call data is refused: custody signs payments, not arbitrary contract calls.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Any

import coincurve
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from eth_account._utils.legacy_transactions import (
    encode_transaction,
    serializable_unsigned_transaction_from_dict,
)
from eth_utils.address import to_checksum_address
from eth_utils.crypto import keccak

from svc.custody.hd import CURVE_ORDER, evm_address

ERC20_TRANSFER_SELECTOR = bytes.fromhex("a9059cbb")
ERC20_TRANSFER_DATA_BYTES = 4 + 32 + 32
HALF_CURVE_ORDER = CURVE_ORDER // 2
RAW_SIGNATURE_BYTES = 64
DIGEST_BYTES = 32
EIP155_V_OFFSET = 35


class TransactionType(IntEnum):
    """finmesh.chain_gateway.v1.TransactionType."""

    LEGACY = 1
    EIP1559 = 2


class TransferKind(IntEnum):
    """What value a transaction moves."""

    NATIVE = 1
    ERC20 = 2
    CANCEL = 3  # zero value to the sender itself: frees a nonce, pays nobody


class MalformedTransaction(ValueError):
    """A transaction custody cannot decode or will not sign (it is not a payment it understands)."""


class SignatureMismatch(RuntimeError):
    """A backend signature that recovers to no address of the key: the backend is broken."""


@dataclass(frozen=True)
class Unsigned:
    """The fields of an unsigned transaction, as integers and bytes."""

    chain_id: int
    type: TransactionType
    sender: str
    to: str
    value: int
    data: bytes
    nonce: int
    gas_limit: int
    gas_price: int  # legacy
    max_fee_per_gas: int  # EIP-1559
    max_priority_fee_per_gas: int  # EIP-1559

    @property
    def fee_per_gas_max(self) -> int:
        """The most this transaction can pay per gas: the gas price, or the max fee."""
        return self.gas_price if self.type is TransactionType.LEGACY else self.max_fee_per_gas

    def as_dict(self) -> dict[str, Any]:
        common: dict[str, Any] = {
            "chainId": self.chain_id,
            "nonce": self.nonce,
            "gas": self.gas_limit,
            "to": to_checksum_address(self.to),
            "value": self.value,
            "data": self.data,
        }
        if self.type is TransactionType.LEGACY:
            return {**common, "gasPrice": self.gas_price}
        return {
            **common,
            "type": 2,
            "maxFeePerGas": self.max_fee_per_gas,
            "maxPriorityFeePerGas": self.max_priority_fee_per_gas,
            "accessList": (),
        }


@dataclass(frozen=True)
class Transfer:
    """Who receives how much: decoded from the transaction, never taken from the caller."""

    kind: TransferKind
    recipient: str  # EIP-55; the sender itself for a cancel
    token: str  # EIP-55 token contract for ERC20, "" otherwise
    amount: int


@dataclass(frozen=True)
class Signature:
    """An Ethereum signature: r, low s (EIP-2), y parity, and v as the envelope encodes it."""

    r: int
    s: int
    y_parity: int
    v: int


@dataclass(frozen=True)
class Signed:
    raw: bytes
    tx_hash: bytes
    signature: Signature


def signing_hash(transaction: Unsigned) -> bytes:
    """Keccak-256 of the unsigned serialisation: what the key signs."""
    try:
        serializable = serializable_unsigned_transaction_from_dict(transaction.as_dict())
    except (TypeError, ValueError) as error:
        raise MalformedTransaction(f"transaction does not serialise: {error}") from None
    digest: bytes = serializable.hash()
    return digest


def decode_transfer(transaction: Unsigned) -> Transfer:
    """The payment a transaction makes; MalformedTransaction for anything else."""
    data = transaction.data
    to = to_checksum_address(transaction.to)
    if not data:
        if to == to_checksum_address(transaction.sender) and transaction.value == 0:
            return Transfer(TransferKind.CANCEL, to, "", 0)
        return Transfer(TransferKind.NATIVE, to, "", transaction.value)
    if data[:4] != ERC20_TRANSFER_SELECTOR or len(data) != ERC20_TRANSFER_DATA_BYTES:
        raise MalformedTransaction("call data is neither empty nor an ERC-20 transfer(address,uint256)")
    if transaction.value != 0:
        raise MalformedTransaction("an ERC-20 transfer must carry no native value")
    address_word, amount_word = data[4:36], data[36:68]
    if address_word[:12] != b"\0" * 12:
        raise MalformedTransaction("ERC-20 recipient is not an ABI-encoded address")
    return Transfer(
        TransferKind.ERC20,
        to_checksum_address(address_word[12:]),
        to,
        int.from_bytes(amount_word, "big"),
    )


def raw_signature(signature: bytes) -> tuple[int, int]:
    """(r, s) from a PKCS#11 ECDSA signature: raw r || s (the standard), or DER (some modules)."""
    if len(signature) == RAW_SIGNATURE_BYTES:
        return int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")
    try:
        r, s = decode_dss_signature(signature)
    except ValueError as error:
        raise SignatureMismatch("backend signature is neither raw r||s nor DER") from error
    return r, s


def ethereum_signature(digest: bytes, r: int, s: int, public_key: bytes, transaction: Unsigned) -> Signature:
    """Low-s normalised signature with the recovery id that recovers `public_key`'s address."""
    assert len(digest) == DIGEST_BYTES, len(digest)
    if not (0 < r < CURVE_ORDER and 0 < s < CURVE_ORDER):
        raise SignatureMismatch("backend signature is out of range")
    # EIP-2: nodes refuse s in the upper half; (r, n - s) is the same signature's twin.
    if s > HALF_CURVE_ORDER:
        s = CURVE_ORDER - s
    expected = evm_address(public_key)
    body = r.to_bytes(32, "big") + s.to_bytes(32, "big")
    for y_parity in (0, 1):
        try:
            recovered = coincurve.PublicKey.from_signature_and_message(
                body + bytes([y_parity]), digest, hasher=None
            )
        except ValueError:
            continue
        if evm_address(recovered.format()) == expected:
            v = (
                transaction.chain_id * 2 + EIP155_V_OFFSET + y_parity
                if transaction.type is TransactionType.LEGACY
                else y_parity
            )
            return Signature(r, s, y_parity, v)
    raise SignatureMismatch("backend signature recovers to no address of the key")


def assemble(transaction: Unsigned, signature: Signature) -> Signed:
    """The signed envelope (RLP, or type byte + RLP) and its hash."""
    serializable = serializable_unsigned_transaction_from_dict(transaction.as_dict())
    raw: bytes = encode_transaction(serializable, (signature.v, signature.r, signature.s))
    return Signed(raw, keccak(raw), signature)


def recover_sender(transaction: Unsigned, signature: Signature) -> str:
    """The address a signature of this transaction recovers to."""
    body = signature.r.to_bytes(32, "big") + signature.s.to_bytes(32, "big") + bytes([signature.y_parity])
    recovered = coincurve.PublicKey.from_signature_and_message(body, signing_hash(transaction), hasher=None)
    return evm_address(recovered.format())
