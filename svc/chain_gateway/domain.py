"""The chain gateway's rules: state machines of reservations, transactions and transfers, fee
and gas arithmetic, ERC-20 call data, and the unsigned transaction a build produces. Pure:
nothing here talks to a chain or a database."""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Any

from eth_account._utils.legacy_transactions import serializable_unsigned_transaction_from_dict
from eth_account.typed_transactions.typed_transaction import TypedTransaction
from eth_utils.address import to_checksum_address
from eth_utils.crypto import keccak

from svc.chain_gateway.config import ChainConfig, GasModel
from svc.kit import errors
from svc.kit.amount import AMOUNT_MAX

# keccak("transfer(address,uint256)")[:4] and keccak("Transfer(address,address,uint256)").
ERC20_TRANSFER_SELECTOR = bytes.fromhex("a9059cbb")
ERC20_TRANSFER_TOPIC = "0x" + keccak(text="Transfer(address,address,uint256)").hex()
ERC20_BALANCE_OF_SELECTOR = bytes.fromhex("70a08231")
NATIVE_TRANSFER_GAS = 21_000
# Nodes accept a replacement only with every fee field raised by at least 10%.
REPLACEMENT_RAISE_BPS = 1_000
BPS = 10_000
NATIVE_LOG_INDEX = -1


class ChainUnavailable(errors.DomainError):
    """The chain is READ_ONLY or DISABLED for this operation."""

    reason = "FEATURE_DISABLED"


class EstimationFailed(errors.DomainError):
    """The node refused to estimate (the transfer would revert: balance, allowance, token rules)."""

    reason = "INSUFFICIENT_FUNDS"


class TransactionRejected(errors.DomainError):
    """The node refused the signed transaction (nonce, fee, balance, signature)."""

    reason = "INVALID_STATE"


class ReservationState(IntEnum):
    """RESERVED -> BROADCAST | RELEASED | EXPIRED; terminal: BROADCAST, RELEASED, EXPIRED."""

    RESERVED = 1
    BROADCAST = 2
    RELEASED = 3
    EXPIRED = 4


class TxStatus(IntEnum):
    """finmesh.chain_gateway.v1.TransactionStatus and its transitions (see the contract)."""

    PENDING = 1
    MINED = 2
    CONFIRMED = 3
    FAILED = 4
    DROPPED = 5
    REPLACED = 6


TX_TRANSITIONS: dict[TxStatus, frozenset[TxStatus]] = {
    TxStatus.PENDING: frozenset(
        {TxStatus.MINED, TxStatus.CONFIRMED, TxStatus.FAILED, TxStatus.DROPPED, TxStatus.REPLACED}
    ),
    TxStatus.MINED: frozenset({TxStatus.CONFIRMED, TxStatus.PENDING}),
    TxStatus.FAILED: frozenset({TxStatus.PENDING}),
    TxStatus.DROPPED: frozenset(
        {TxStatus.PENDING, TxStatus.REPLACED, TxStatus.MINED, TxStatus.CONFIRMED, TxStatus.FAILED}
    ),
    TxStatus.CONFIRMED: frozenset(),
    TxStatus.REPLACED: frozenset(),
}
TX_OPEN = (TxStatus.PENDING, TxStatus.MINED, TxStatus.FAILED, TxStatus.DROPPED)


def tx_may_move(current: TxStatus, target: TxStatus) -> bool:
    """Whether the transaction state machine allows current -> target."""
    return current is target or target in TX_TRANSITIONS[current]


class TransferStatus(IntEnum):
    """SEEN -> CONFIRMED | REORGED; CONFIRMED -> REORGED."""

    SEEN = 1
    CONFIRMED = 2
    REORGED = 3


class BlockStatus(IntEnum):
    CANONICAL = 1
    ORPHANED = 2


class TransferKind(IntEnum):
    NATIVE = 1
    ERC20 = 2


class TxType(IntEnum):
    """finmesh.chain_gateway.v1.TransactionType."""

    LEGACY = 1
    EIP1559 = 2


class ReplacementMode(IntEnum):
    SPEED_UP = 1
    CANCEL = 2


@dataclass(frozen=True)
class Asset:
    """A platform asset on a chain: native (no contract) or an ERC-20."""

    asset_id: str
    symbol: str
    decimals: int
    contract: str  # lower-case hex, "" for native

    @property
    def native(self) -> bool:
        return not self.contract


def chain_assets(chain: str, config: ChainConfig) -> list[Asset]:
    """The native asset first, then the configured tokens."""
    native = Asset(f"{chain}:{config.native_symbol}", config.native_symbol, config.native_decimals, "")
    tokens = [
        Asset(f"{chain}:{token.symbol}", token.symbol, token.decimals, token.contract.lower())
        for token in config.tokens
    ]
    return [native, *tokens]


def asset_of(chain: str, config: ChainConfig, asset_id: str, field: str) -> Asset:
    for asset in chain_assets(chain, config):
        if asset.asset_id == asset_id:
            return asset
    raise errors.InvalidArgument(
        [
            errors.FieldViolation(
                field, f"{asset_id} is neither the native asset nor a token of {chain}", "unknown_asset"
            )
        ]
    )


def parse_amount(text: str, field: str) -> int:
    amount = int(text)
    if amount > AMOUNT_MAX:
        raise errors.InvalidArgument([errors.FieldViolation(field, "above 2^256 - 1", "range")])
    return amount


def erc20_transfer_data(recipient: str, amount: int) -> bytes:
    """ABI encoding of transfer(recipient, amount)."""
    return ERC20_TRANSFER_SELECTOR + bytes(12) + bytes.fromhex(recipient[2:]) + amount.to_bytes(32, "big")


def erc20_balance_of_data(holder: str) -> bytes:
    return ERC20_BALANCE_OF_SELECTOR + bytes(12) + bytes.fromhex(holder[2:])


def topic_address(address: str) -> str:
    """An address as an indexed event topic (left-padded to 32 bytes)."""
    return "0x" + "00" * 12 + address[2:].lower()


def address_of_topic(topic: str) -> str:
    return "0x" + topic[-40:].lower()


@dataclass(frozen=True)
class Intent:
    """Who receives how much of which asset."""

    kind: TransferKind
    recipient: str
    asset: str
    amount: int

    def as_json(self) -> dict[str, Any]:
        return {
            "kind": int(self.kind),
            "recipient": self.recipient,
            "asset": self.asset,
            "amount": str(self.amount),
        }

    @staticmethod
    def from_json(data: dict[str, Any]) -> Intent:
        return Intent(TransferKind(data["kind"]), data["recipient"], data["asset"], int(data["amount"]))


@dataclass(frozen=True)
class Fees:
    """A fee estimate: gas and the fee fields of the chain's gas model."""

    gas_model: GasModel
    estimated_gas: int
    gas_limit: int
    base_fee_per_gas: int | None
    max_priority_fee_per_gas: int | None
    max_fee_per_gas: int | None
    gas_price: int | None
    capped: bool
    block_number: int
    estimate_time_us: int

    @property
    def fee_per_gas_max(self) -> int:
        value = self.max_fee_per_gas if self.gas_model is GasModel.EIP1559 else self.gas_price
        assert value is not None
        return value

    def max_network_fee(self) -> int:
        return self.gas_limit * self.fee_per_gas_max

    def expected_network_fee(self) -> int:
        if self.gas_model is GasModel.EIP1559:
            assert self.base_fee_per_gas is not None and self.max_priority_fee_per_gas is not None
            per_gas = min(self.base_fee_per_gas + self.max_priority_fee_per_gas, self.fee_per_gas_max)
            return self.estimated_gas * per_gas
        return self.estimated_gas * self.fee_per_gas_max


def gas_limit_with_margin(estimated: int, margin_bps: int) -> int:
    """The estimate plus the margin, rounded up."""
    return -(-estimated * (BPS + margin_bps) // BPS)


def fees_for(
    config: ChainConfig,
    *,
    estimated_gas: int,
    base_fee: int | None,
    priority_fee: int | None,
    gas_price: int | None,
    cap: int,
    block_number: int,
    now_us: int,
) -> Fees:
    """Fee fields under `cap`: EIP-1559 max fee = 2 x base fee + tip (room for six full blocks
    of base-fee growth), legacy gas price as the node quotes it."""
    gas_limit = gas_limit_with_margin(estimated_gas, config.gas_limit_margin_bps)
    if config.gas_model is GasModel.EIP1559:
        assert base_fee is not None and priority_fee is not None
        wanted = 2 * base_fee + priority_fee
        max_fee = min(wanted, cap)
        tip = min(priority_fee, max_fee)
        return Fees(
            config.gas_model,
            estimated_gas,
            gas_limit,
            base_fee,
            tip,
            max_fee,
            None,
            wanted > cap,
            block_number,
            now_us,
        )
    assert gas_price is not None
    price = min(gas_price, cap)
    return Fees(
        config.gas_model,
        estimated_gas,
        gas_limit,
        None,
        None,
        None,
        price,
        gas_price > cap,
        block_number,
        now_us,
    )


def raised(value: int) -> int:
    """The least fee a node accepts for a replacement of a transaction paying `value`."""
    return -(-value * (BPS + REPLACEMENT_RAISE_BPS) // BPS)


@dataclass(frozen=True)
class Unsigned:
    """An unsigned transaction as built (and stored on its nonce reservation)."""

    chain_id: int
    type: TxType
    from_address: str
    to_address: str
    value: int
    data: bytes
    nonce: int
    gas_limit: int
    gas_price: int | None
    max_fee_per_gas: int | None
    max_priority_fee_per_gas: int | None
    intent: Intent

    def fields(self) -> dict[str, Any]:
        """The eth-account transaction dictionary (what is signed)."""
        fields: dict[str, Any] = {
            "chainId": self.chain_id,
            "nonce": self.nonce,
            "to": to_checksum_address(self.to_address),
            "value": self.value,
            "data": self.data,
            "gas": self.gas_limit,
        }
        if self.type is TxType.EIP1559:
            fields.update(
                type=2, maxFeePerGas=self.max_fee_per_gas, maxPriorityFeePerGas=self.max_priority_fee_per_gas
            )
        else:
            fields["gasPrice"] = self.gas_price
        return fields

    def signing_hash(self) -> str:
        fields = self.fields()
        if self.type is TxType.EIP1559:
            digest = TypedTransaction.from_dict(fields).hash()
        else:
            digest = serializable_unsigned_transaction_from_dict(fields).hash()
        return "0x" + bytes(digest).hex()

    def as_json(self) -> dict[str, Any]:
        return {
            "chain_id": self.chain_id,
            "type": int(self.type),
            "from": self.from_address,
            "to": self.to_address,
            "value": str(self.value),
            "data": "0x" + self.data.hex(),
            "nonce": self.nonce,
            "gas_limit": self.gas_limit,
            "gas_price": _optional_text(self.gas_price),
            "max_fee_per_gas": _optional_text(self.max_fee_per_gas),
            "max_priority_fee_per_gas": _optional_text(self.max_priority_fee_per_gas),
            "intent": self.intent.as_json(),
        }

    @staticmethod
    def from_json(data: dict[str, Any]) -> Unsigned:
        return Unsigned(
            chain_id=int(data["chain_id"]),
            type=TxType(data["type"]),
            from_address=data["from"],
            to_address=data["to"],
            value=int(data["value"]),
            data=bytes.fromhex(data["data"][2:]),
            nonce=int(data["nonce"]),
            gas_limit=int(data["gas_limit"]),
            gas_price=_optional_int(data["gas_price"]),
            max_fee_per_gas=_optional_int(data["max_fee_per_gas"]),
            max_priority_fee_per_gas=_optional_int(data["max_priority_fee_per_gas"]),
            intent=Intent.from_json(data["intent"]),
        )


def _optional_text(value: int | None) -> str | None:
    return None if value is None else str(value)


def _optional_int(value: str | None) -> int | None:
    return None if value is None else int(value)


def build_unsigned(
    config: ChainConfig, sender: str, asset: Asset, recipient: str, amount: int, nonce: int, fees: Fees
) -> Unsigned:
    """The transfer of `amount` of `asset` to `recipient`, with the given nonce and fees."""
    intent = Intent(
        TransferKind.NATIVE if asset.native else TransferKind.ERC20, recipient, asset.asset_id, amount
    )
    if asset.native:
        to_address, value, data = recipient, amount, b""
    else:
        to_address, value, data = asset.contract, 0, erc20_transfer_data(recipient, amount)
    return Unsigned(
        chain_id=config.chain_id,
        type=TxType.EIP1559 if config.gas_model is GasModel.EIP1559 else TxType.LEGACY,
        from_address=sender,
        to_address=to_address,
        value=value,
        data=data,
        nonce=nonce,
        gas_limit=fees.gas_limit,
        gas_price=fees.gas_price,
        max_fee_per_gas=fees.max_fee_per_gas,
        max_priority_fee_per_gas=fees.max_priority_fee_per_gas,
        intent=intent,
    )


def replacement(original: Unsigned, mode: ReplacementMode, fees: Fees, native_asset: str) -> Unsigned:
    """Same sender and nonce with `fees`; CANCEL sends nothing to the sender itself."""
    if mode is ReplacementMode.SPEED_UP:
        to_address, value, data, intent = original.to_address, original.value, original.data, original.intent
        gas_limit = max(original.gas_limit, fees.gas_limit)
    else:
        to_address, value, data = original.from_address, 0, b""
        intent = Intent(TransferKind.NATIVE, original.from_address, native_asset, 0)
        gas_limit = NATIVE_TRANSFER_GAS
    return Unsigned(
        chain_id=original.chain_id,
        type=original.type,
        from_address=original.from_address,
        to_address=to_address,
        value=value,
        data=data,
        nonce=original.nonce,
        gas_limit=gas_limit,
        gas_price=fees.gas_price,
        max_fee_per_gas=fees.max_fee_per_gas,
        max_priority_fee_per_gas=fees.max_priority_fee_per_gas,
        intent=intent,
    )


def replacement_fees(
    config: ChainConfig, original: Unsigned, market: Fees, cap: int, requested: int | None
) -> Fees:
    """Fee fields of a replacement: every field at least 10% over the original's, the market's or
    the requested fee if higher, never above `cap` (LIMIT_EXCEEDED when the cap leaves no room)."""
    if original.type is TxType.EIP1559:
        assert original.max_fee_per_gas is not None and original.max_priority_fee_per_gas is not None
        assert market.max_fee_per_gas is not None and market.max_priority_fee_per_gas is not None
        floor_fee = raised(original.max_fee_per_gas)
        floor_tip = raised(original.max_priority_fee_per_gas)
        max_fee = max(floor_fee, requested or 0, market.max_fee_per_gas if requested is None else 0)
        tip = max(floor_tip, market.max_priority_fee_per_gas)
        if floor_fee > cap or (requested is not None and requested > cap):
            raise errors.LimitExceeded(
                f"a replacement needs max_fee_per_gas >= {floor_fee}; the cap is {cap}",
                metadata={"required": str(floor_fee), "cap": str(cap)},
            )
        max_fee = min(max_fee, cap)
        tip = min(tip, max_fee)
        if tip < floor_tip:
            raise errors.LimitExceeded(
                f"a replacement needs max_priority_fee_per_gas >= {floor_tip}; the cap leaves {tip}",
                metadata={"required": str(floor_tip), "cap": str(cap)},
            )
        return Fees(
            config.gas_model,
            market.estimated_gas,
            market.gas_limit,
            market.base_fee_per_gas,
            tip,
            max_fee,
            None,
            False,
            market.block_number,
            market.estimate_time_us,
        )
    assert original.gas_price is not None and market.gas_price is not None
    floor_price = raised(original.gas_price)
    if floor_price > cap or (requested is not None and requested > cap):
        raise errors.LimitExceeded(
            f"a replacement needs gas_price >= {floor_price}; the cap is {cap}",
            metadata={"required": str(floor_price), "cap": str(cap)},
        )
    price = min(max(floor_price, requested or 0, market.gas_price if requested is None else 0), cap)
    return Fees(
        config.gas_model,
        market.estimated_gas,
        market.gas_limit,
        None,
        None,
        None,
        price,
        False,
        market.block_number,
        market.estimate_time_us,
    )


def confirmations(block_number: int, head: int) -> int:
    """The block that includes a transaction is its first confirmation."""
    return max(0, head - block_number + 1) if block_number else 0


def transfer_id(chain: str, tx_hash: str, log_index: int) -> str:
    return f"{chain}:{tx_hash}:{log_index}"
