"""The one adapter every EVM chain is reached through: reads, estimates and broadcasts over the
chain's provider pool, shaped by its configuration (gas model, cap, margin). Nothing in it is
specific to one chain."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from eth_utils.address import to_checksum_address
from eth_utils.crypto import keccak
from web3 import AsyncWeb3
from web3.exceptions import BlockNotFound, ContractLogicError, TransactionNotFound, Web3RPCError
from web3.providers.eth_tester import AsyncEthereumTesterProvider
from web3.types import BlockIdentifier

from svc.chain_gateway import domain
from svc.chain_gateway.config import ChainConfig, GasModel
from svc.chain_gateway.domain import Asset, Fees
from svc.chain_gateway.rpc import ProviderPool
from svc.kit.errors import Conflict, FieldViolation, InvalidArgument

ERROR_MESSAGE_MAX = 300


@dataclass(frozen=True)
class BlockHeader:
    number: int
    hash: str
    parent_hash: str
    timestamp_s: int
    base_fee_per_gas: int | None


@dataclass(frozen=True)
class Receipt:
    block_number: int
    block_hash: str
    status: int
    gas_used: int
    effective_gas_price: int


def _hex(value: Any) -> str:
    return AsyncWeb3.to_hex(value) if not isinstance(value, str) else value


def _header(block: Any) -> BlockHeader:
    base_fee = block.get("baseFeePerGas")
    return BlockHeader(
        number=int(block["number"]),
        hash=_hex(block["hash"]).lower(),
        parent_hash=_hex(block["parentHash"]).lower(),
        timestamp_s=int(block["timestamp"]),
        base_fee_per_gas=None if base_fee is None else int(base_fee),
    )


def _rpc_message(error: Web3RPCError) -> str:
    message = error.message if hasattr(error, "message") and error.message else str(error)
    return message[:ERROR_MESSAGE_MAX]


def _estimable(w3: AsyncWeb3[Any], call: dict[str, Any]) -> dict[str, Any]:
    """The estimate call for this provider. A JSON-RPC node (geth, Hardhat) estimates a call
    without fee fields at no gas price, so the sender need not hold the gas (a deposit address is
    estimated before its gas top-up); the embedded EVM prices such a call at 1 gwei and refuses
    a sender without it, unless the fees are given as zero (its estimates run at base fee 0)."""
    if isinstance(w3.provider, AsyncEthereumTesterProvider):
        return {**call, "maxFeePerGas": 0, "maxPriorityFeePerGas": 0}
    return call


class ChainAdapter:
    """One configured chain: its key, configuration and providers."""

    def __init__(self, key: str, config: ChainConfig) -> None:
        self.key = key
        self.config = config
        self.pool = ProviderPool(key, config)
        self.assets = domain.chain_assets(key, config)
        self.native = self.assets[0]

    async def head(self) -> BlockHeader:
        return _header(
            await self.pool.call(lambda w3: w3.eth.get_block("latest"), what="eth_getBlockByNumber")
        )

    async def block(self, number: int) -> BlockHeader | None:
        """The canonical block at `number`, None above the head."""

        async def read(w3: AsyncWeb3[Any]) -> Any:
            try:
                return await w3.eth.get_block(number)
            except BlockNotFound:
                return None

        found = await self.pool.call(read, what="eth_getBlockByNumber")
        return None if found is None else _header(found)

    async def block_with_transactions(self, number: int) -> tuple[BlockHeader, list[Any]] | None:
        async def read(w3: AsyncWeb3[Any]) -> Any:
            try:
                return await w3.eth.get_block(number, full_transactions=True)
            except BlockNotFound:
                return None

        found = await self.pool.call(read, what="eth_getBlockByNumber")
        if found is None:
            return None
        return _header(found), list(found["transactions"])

    async def transfer_logs(self, number: int, block_hash: str, recipients: list[str]) -> list[Any]:
        """ERC-20 Transfer logs of one block whose recipient topic is one of `recipients`.

        Asked by number (not every node takes `blockHash`), then kept only if they belong to the
        block with `block_hash`: a log of a block that replaced it meanwhile is not this block's."""
        topics: list[Any] = [domain.ERC20_TRANSFER_TOPIC, None, [domain.topic_address(a) for a in recipients]]
        query = {"fromBlock": number, "toBlock": number, "topics": topics}

        async def read(w3: AsyncWeb3[Any]) -> Any:
            return await w3.eth.get_logs(query)  # type: ignore[arg-type]

        found = list(await self.pool.call(read, what="eth_getLogs"))
        return [entry for entry in found if _hex(entry["blockHash"]).lower() == block_hash]

    async def nonces(self, address: str) -> tuple[int, int]:
        """(latest, pending) transaction counts of an address."""
        checksum = to_checksum_address(address)

        async def read(w3: AsyncWeb3[Any]) -> tuple[int, int]:
            latest = await w3.eth.get_transaction_count(checksum, "latest")
            pending = await w3.eth.get_transaction_count(checksum, "pending")
            return int(latest), int(pending)

        return await self.pool.call(read, what="eth_getTransactionCount")

    async def estimate(
        self, sender: str, asset: Asset, recipient: str, amount: int, cap: int | None = None
    ) -> Fees:
        """Gas (with the margin) and fee fields under the cap for a transfer; EstimationFailed
        when the node says the transfer would revert."""
        if asset.native:
            call: dict[str, Any] = {
                "from": to_checksum_address(sender),
                "to": to_checksum_address(recipient),
                "value": amount,
            }
        else:
            call = {
                "from": to_checksum_address(sender),
                "to": to_checksum_address(asset.contract),
                "value": 0,
                "data": "0x" + domain.erc20_transfer_data(recipient, amount).hex(),
            }
        cap_per_gas = min(self.config.fee_cap_per_gas, cap) if cap else self.config.fee_cap_per_gas
        eip1559 = self.config.gas_model is GasModel.EIP1559
        default_tip = self.config.priority_fee_per_gas_default

        async def read(w3: AsyncWeb3[Any]) -> tuple[int, Any, int | None, int | None]:
            try:
                gas = await w3.eth.estimate_gas(_estimable(w3, call))  # type: ignore[arg-type]
            except (ContractLogicError, Web3RPCError) as error:
                raise domain.EstimationFailed(
                    f"the node cannot estimate this transfer: {error}"[:ERROR_MESSAGE_MAX],
                    metadata={"chain": self.key, "asset": asset.asset_id},
                ) from None
            block = await w3.eth.get_block("latest")
            if eip1559:
                try:
                    tip = int(await w3.eth.max_priority_fee)
                except (Web3RPCError, ValueError, NotImplementedError):
                    tip = default_tip
                return int(gas), block, tip, None
            return int(gas), block, None, int(await w3.eth.gas_price)

        gas, block, tip, price = await self.pool.call(read, what="eth_estimateGas")
        header = _header(block)
        return domain.fees_for(
            self.config,
            estimated_gas=gas,
            base_fee=header.base_fee_per_gas if eip1559 else None,
            priority_fee=tip,
            gas_price=price,
            cap=cap_per_gas,
            block_number=header.number,
            now_us=time.time_ns() // 1000,
        )

    async def send_raw(self, raw: bytes) -> None:
        """Sends a signed transaction; TransactionRejected with the node's reason if refused.

        An error answer is only a refusal if the node does not know the transaction afterwards:
        some nodes (Hardhat, by default) mine a transaction that reverts and still answer the
        send with the revert as an error, and a transaction on chain must never be reported
        as not sent."""

        async def send(w3: AsyncWeb3[Any]) -> None:
            await w3.eth.send_raw_transaction(raw)

        try:
            await self.pool.call(send, what="eth_sendRawTransaction")
        except Web3RPCError as error:
            message = _rpc_message(error)
            if await self.known("0x" + keccak(raw).hex()):
                return
            raise domain.TransactionRejected(
                f"the node refused the transaction: {message}", metadata={"chain": self.key}
            ) from None

    async def receipt(self, tx_hash: str) -> Receipt | None:
        async def read(w3: AsyncWeb3[Any]) -> Any:
            try:
                return await w3.eth.get_transaction_receipt(tx_hash)  # type: ignore[arg-type]
            except TransactionNotFound:
                return None

        found = await self.pool.call(read, what="eth_getTransactionReceipt")
        if found is None or found.get("blockNumber") is None:
            return None
        return Receipt(
            block_number=int(found["blockNumber"]),
            block_hash=_hex(found["blockHash"]).lower(),
            status=int(found["status"]),
            gas_used=int(found["gasUsed"]),
            effective_gas_price=int(found.get("effectiveGasPrice") or 0),
        )

    async def known(self, tx_hash: str) -> bool:
        """Whether a provider knows the transaction (in its mempool or mined)."""

        async def read(w3: AsyncWeb3[Any]) -> bool:
            try:
                await w3.eth.get_transaction(tx_hash)  # type: ignore[arg-type]
            except TransactionNotFound:
                return False
            return True

        return await self.pool.call(read, what="eth_getTransactionByHash")

    async def resolve(self, number: int | None, *, confirmed: bool) -> BlockHeader:
        """The block of a read: an explicit number, the confirmed block, or the head."""
        head = await self.head()
        if number is None and not confirmed:
            return head
        target = number if number is not None else max(0, head.number - self.config.confirmation_depth + 1)
        if target > head.number:
            raise InvalidArgument(
                [FieldViolation("block.number", f"block {target} is above the head {head.number}")]
            )
        found = await self.block(target)
        if found is None:
            raise Conflict(
                f"block {target} left the chain while it was read (a reorganisation): retry",
                metadata={"chain": self.key, "block": str(target)},
            )
        return found

    async def balance(self, address: str, asset: Asset, block: BlockIdentifier) -> int:
        holder = to_checksum_address(address)
        if asset.native:
            return int(
                await self.pool.call(lambda w3: w3.eth.get_balance(holder, block), what="eth_getBalance")
            )
        call = {
            "to": to_checksum_address(asset.contract),
            "data": "0x" + domain.erc20_balance_of_data(address).hex(),
        }

        async def read(w3: AsyncWeb3[Any]) -> int:
            result = await w3.eth.call(call, block)  # type: ignore[arg-type]
            return int.from_bytes(bytes(result), "big") if result else 0

        return await self.pool.call(read, what="eth_call")
