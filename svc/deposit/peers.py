"""The deposit service's calls to its peers: the ledger (custody accounts, balances and the
deposit's and sweep's entries), the account service (the user's account and freezes), the chain
gateway (chain depth, follower progress; balances, builds and broadcasts for sweeps), custody
(hot wallets, signatures) and the wallet service (who owns a deposit address).

Every mutating call carries an id derived from the deposit and the step, so repeating a step after
a failure between the peer's commit and ours replays the peer's result instead of applying it twice.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import grpc
from finmesh.account.v1 import account_resources_pb2 as account_resources
from finmesh.account.v1 import account_service_pb2 as account_service
from finmesh.account.v1 import account_service_pb2_grpc as account_grpc
from finmesh.chain_gateway.v1 import chain_gateway_resources_pb2 as chain_resources
from finmesh.chain_gateway.v1 import chain_gateway_service_pb2 as chain_service
from finmesh.chain_gateway.v1 import chain_gateway_service_pb2_grpc as chain_grpc
from finmesh.common.v1 import money_pb2
from finmesh.custody.v1 import custody_resources_pb2 as custody_resources
from finmesh.custody.v1 import custody_service_pb2 as custody_service
from finmesh.custody.v1 import custody_service_pb2_grpc as custody_grpc
from finmesh.ledger.v1 import ledger_resources_pb2 as ledger_resources
from finmesh.ledger.v1 import ledger_service_pb2 as ledger_service
from finmesh.ledger.v1 import ledger_service_pb2_grpc as ledger_grpc
from finmesh.wallet.v1 import wallet_resources_pb2 as wallet_resources
from finmesh.wallet.v1 import wallet_service_pb2 as wallet_service
from finmesh.wallet.v1 import wallet_service_pb2_grpc as wallet_grpc

from svc.deposit.domain import custody_code
from svc.kit import errors, remote
from svc.kit.client import as_service

# Calls made outside an RPC (event handling, the credit round) have no caller deadline to inherit.
CALL_TIMEOUT_S = 10.0
BALANCES_PER_CALL_MAX = 1000
DEBIT = ledger_resources.POSTING_SIDE_DEBIT
CREDIT = ledger_resources.POSTING_SIDE_CREDIT
APPLIED = (ledger_resources.ENTRY_RESULT_CODE_OK, ledger_resources.ENTRY_RESULT_CODE_EXISTS)
MAIN_ACCOUNT = account_resources.ACCOUNT_KIND_MAIN


@dataclass(frozen=True)
class ChainInfo:
    """What the deposit service needs of a chain: its depth, native asset and token contracts."""

    chain: str
    confirmation_depth: int
    native_asset: str
    # Supported assets by id, each with its token contract ('' for the native coin).
    assets: dict[str, str]


@dataclass(frozen=True)
class ChainProgress:
    """The follower's newest processed block, as read at `read_at` (monotonic seconds)."""

    last_block_number: int
    read_at: float


def _ledger_error(result: ledger_resources.EntryResult) -> errors.DomainError:
    name = ledger_resources.EntryResultCode.Name(result.code)
    metadata = {"entry_result_code": name, "entry_id": result.entry_id}
    if result.code in (
        ledger_resources.ENTRY_RESULT_CODE_EXCEEDS_CREDITS,
        ledger_resources.ENTRY_RESULT_CODE_EXCEEDS_DEBITS,
    ):
        return errors.InsufficientFunds(f"ledger: {result.detail}", metadata=metadata)
    return errors.InvalidState(f"ledger: {name} {result.detail}", metadata=metadata)


class Ledger:
    """What the deposit service asks of the ledger."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self._stub = ledger_grpc.LedgerServiceStub(channel)
        self._ids: dict[str, str] = {}

    async def platform_account(
        self, code: str, asset: str, account_type: int, constraint: int, address: str = ""
    ) -> str:
        """The id of a platform account, created on first use (the same code is always one account)."""
        known = self._ids.get(code)
        if known is not None:
            return known
        account = ledger_resources.LedgerAccount(
            code=code,
            type=account_type,  # type: ignore[arg-type]
            asset=asset,
            constraint=constraint,  # type: ignore[arg-type]
        )
        if address:
            account.chain_address.chain = asset.split(":", 1)[0]
            account.chain_address.address = address
        request = ledger_service.CreateLedgerAccountRequest(
            request_id="deposit.account." + hashlib.sha256(code.encode()).hexdigest()[:40], account=account
        )
        try:
            created = await self._stub.CreateLedgerAccount(request, timeout=CALL_TIMEOUT_S)
            account_id = created.account.account_id
        except grpc.aio.AioRpcError as error:
            refused = remote.translate(error, "ledger")
            if refused.reason != "ALREADY_EXISTS" or "account_id" not in refused.metadata:
                raise refused from None
            account_id = refused.metadata["account_id"]
        self._ids[code] = account_id
        return account_id

    async def custody_account(self, address: str, asset: str) -> str:
        """The asset account mirroring a deposit address's holding of an asset."""
        return await self.platform_account(
            custody_code(address, asset),
            asset,
            ledger_resources.ACCOUNT_TYPE_ASSET,
            ledger_resources.BALANCE_CONSTRAINT_CREDITS_MUST_NOT_EXCEED_DEBITS,
            address,
        )

    async def posted_balances(self, account_ids: Sequence[str]) -> dict[str, int]:
        """Posted debits less posted credits of asset accounts, by account id, now."""
        found: dict[str, int] = {}
        unique = sorted(set(account_ids))
        for start in range(0, len(unique), BALANCES_PER_CALL_MAX):
            request = ledger_service.BatchGetLedgerBalancesRequest(
                account_ids=unique[start : start + BALANCES_PER_CALL_MAX]
            )
            try:
                with as_service():
                    response = await self._stub.BatchGetLedgerBalances(request, timeout=CALL_TIMEOUT_S)
            except grpc.aio.AioRpcError as error:
                raise remote.translate(error, "ledger") from None
            for balance in response.balances:
                found[balance.account_id] = int(balance.debits_posted or "0") - int(
                    balance.credits_posted or "0"
                )
        return found

    async def commit(self, request_id: str, entries: Sequence[ledger_resources.JournalEntry]) -> None:
        """Commits entries linked as one chain (all or nothing); entries applied before are EXISTS."""
        chain = [ledger_resources.JournalEntry() for _ in entries]
        for index, (linked, entry) in enumerate(zip(chain, entries, strict=True)):
            linked.CopyFrom(entry)
            linked.linked = index < len(entries) - 1
        try:
            response = await self._stub.CreateJournalEntries(
                ledger_service.CreateJournalEntriesRequest(request_id=request_id, entries=chain),
                timeout=CALL_TIMEOUT_S,
            )
        except grpc.aio.AioRpcError as error:
            raise remote.translate(error, "ledger") from None
        failed = [result for result in response.results if result.code not in APPLIED]
        if failed:
            own = [r for r in failed if r.code != ledger_resources.ENTRY_RESULT_CODE_LINKED_ENTRY_FAILED]
            raise _ledger_error((own or failed)[0])

    async def entry(self, entry_id: str) -> ledger_resources.JournalEntry | None:
        """One journal entry, None if the ledger has none of that id."""
        try:
            response = await self._stub.GetJournalEntry(
                ledger_service.GetJournalEntryRequest(entry_id=entry_id), timeout=CALL_TIMEOUT_S
            )
        except grpc.aio.AioRpcError as error:
            if error.code() is grpc.StatusCode.NOT_FOUND:
                return None
            raise remote.translate(error, "ledger") from None
        return response.entry


class Accounts:
    """What the deposit service asks of the account service."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self._stub = account_grpc.AccountServiceStub(channel)

    async def open(self, user_id: str, asset: str) -> account_resources.Account:
        """The user's MAIN account of an asset, opened on first use."""
        digest = hashlib.sha256(f"{user_id}:{asset}".encode()).hexdigest()[:40]
        request = account_service.OpenAccountRequest(
            request_id=f"deposit.open.{digest}", user_id=user_id, asset=asset, kind=MAIN_ACCOUNT
        )
        try:
            response = await self._stub.OpenAccount(request, timeout=CALL_TIMEOUT_S)
        except grpc.aio.AioRpcError as error:
            raise remote.translate(error, "account") from None
        return response.account

    async def available(self, account_id: str) -> int:
        """The account's available balance, read from the ledger now."""
        try:
            response = await self._stub.GetAccount(
                account_service.GetAccountRequest(account_id=account_id), timeout=CALL_TIMEOUT_S
            )
        except grpc.aio.AioRpcError as error:
            raise remote.translate(error, "account") from None
        return int(response.account.balance.available or "0")

    async def freeze(
        self, request_id: str, account_id: str, amount: int, detail: str
    ) -> account_resources.Freeze:
        """An AMOUNT freeze for a deposit a reorganisation removed after credit."""
        request = account_service.CreateFreezeRequest(
            request_id=request_id,
            account_id=account_id,
            scope=account_resources.FREEZE_SCOPE_AMOUNT,
            amount=str(amount),
            reason=account_resources.FREEZE_REASON_DEPOSIT_REORG,
            reason_detail=detail,
            placed_by="deposit",
        )
        try:
            response = await self._stub.CreateFreeze(request, timeout=CALL_TIMEOUT_S)
        except grpc.aio.AioRpcError as error:
            raise remote.translate(error, "account") from None
        return response.freeze

    async def release(
        self, request_id: str, account_id: str, freeze_id: str, note: str, by: str, approval_id: str
    ) -> None:
        """Releases a freeze in full."""
        request = account_service.ReleaseFreezeRequest(
            request_id=request_id, account_id=account_id, freeze_id=freeze_id, note=note,
            released_by=by, action_request_id=approval_id,
        )  # fmt: skip
        try:
            await self._stub.ReleaseFreeze(request, timeout=CALL_TIMEOUT_S)
        except grpc.aio.AioRpcError as error:
            raise remote.translate(error, "account") from None

    async def capture(
        self, request_id: str, account_id: str, freeze_id: str, destination: str, note: str, by: str,
        approval_id: str,
    ) -> account_resources.Freeze:  # fmt: skip
        """Moves a frozen amount to a ledger account (the deposit address's custody account)."""
        request = account_service.CaptureFreezeRequest(
            request_id=request_id, account_id=account_id, freeze_id=freeze_id,
            destination_ledger_account_code=destination, note=note, captured_by=by,
            action_request_id=approval_id,
        )  # fmt: skip
        try:
            response = await self._stub.CaptureFreeze(request, timeout=CALL_TIMEOUT_S)
        except grpc.aio.AioRpcError as error:
            raise remote.translate(error, "account") from None
        return response.freeze


class Chains:
    """What the deposit service asks of the chain gateway: chain settings and follower progress."""

    def __init__(self, channel: grpc.aio.Channel, progress_ttl_s: float) -> None:
        self._stub = chain_grpc.ChainGatewayServiceStub(channel)
        self._chains: dict[str, ChainInfo] = {}
        self._progress: dict[str, ChainProgress] = {}
        self._progress_ttl_s = progress_ttl_s

    @property
    def stub(self) -> chain_grpc.ChainGatewayServiceStub:
        return self._stub

    async def chain(self, chain: str) -> ChainInfo:
        """A chain's settings (read once: depth and tokens change only with a redeploy)."""
        known = self._chains.get(chain)
        if known is not None:
            return known
        try:
            response = await self._stub.GetChain(
                chain_service.GetChainRequest(chain=chain), timeout=CALL_TIMEOUT_S
            )
        except grpc.aio.AioRpcError as error:
            raise remote.translate(error, "chain-gateway") from None
        found: chain_resources.Chain = response.chain
        assets = {found.native_asset.id: ""}
        assets.update({token.id: token.contract_address.lower() for token in found.tokens})
        info = ChainInfo(chain, found.confirmation_depth, found.native_asset.id, assets)
        self._chains[chain] = info
        return info

    async def last_block(self, chain: str) -> int:
        """The follower's newest processed block (cached for the configured few seconds)."""
        known = self._progress.get(chain)
        if known is not None and time.monotonic() - known.read_at <= self._progress_ttl_s:
            return known.last_block_number
        try:
            response = await self._stub.GetFollowerStatus(
                chain_service.GetFollowerStatusRequest(chain=chain), timeout=CALL_TIMEOUT_S
            )
        except grpc.aio.AioRpcError as error:
            raise remote.translate(error, "chain-gateway") from None
        self._progress[chain] = ChainProgress(response.status.last_block_number, time.monotonic())
        return response.status.last_block_number


class Gateway:
    """The chain gateway's transaction calls for sweeps, as this service (never for the operator
    being served)."""

    def __init__(self, stub: chain_grpc.ChainGatewayServiceStub) -> None:
        self._stub = stub

    async def _call(self, method: str, request: object) -> Any:
        try:
            with as_service():
                return await getattr(self._stub, method)(request, timeout=CALL_TIMEOUT_S)
        except grpc.aio.AioRpcError as error:
            raise remote.translate(error, "chain-gateway") from None

    async def balance(self, chain: str, address: str, asset: str) -> int:
        """What an address holds of an asset at the newest block."""
        response = await self._call(
            "GetBalance",
            chain_service.GetBalanceRequest(
                chain=chain,
                query=chain_service.BalanceQuery(address=address, asset=asset),
                block=chain_service.BlockSelector(latest=True),
            ),
        )
        return int(response.balance.amount.amount or "0")

    async def estimate(self, chain: str, sender: str, recipient: str, asset: str, amount: int) -> Any:
        """The gas and fee of a transfer (FeeEstimate), no nonce allocated."""
        response = await self._call(
            "EstimateGas",
            chain_service.EstimateGasRequest(
                chain=chain, from_address=sender, recipient=recipient, amount=money(asset, amount)
            ),
        )
        return response.estimate

    async def build(
        self, request_id: str, chain: str, sender: str, recipient: str, asset: str, amount: int,
        reference: str, max_fee_per_gas: int,
    ) -> Any:  # fmt: skip
        """An unsigned transfer with its nonce reserved (BuildTransferResponse); idempotent."""
        return await self._call(
            "BuildTransfer",
            chain_service.BuildTransferRequest(
                request_id=request_id, chain=chain, from_address=sender, recipient=recipient,
                amount=money(asset, amount), reference=reference, max_fee_per_gas=str(max_fee_per_gas),
            ),
        )  # fmt: skip

    async def release(self, request_id: str, reservation_id: str, reason: str) -> None:
        """Gives back the nonce of a built transaction that will never be broadcast."""
        await self._call(
            "ReleaseNonce",
            chain_service.ReleaseNonceRequest(
                request_id=request_id, reservation_id=reservation_id, reason=reason[:200]
            ),
        )

    async def broadcast(self, request_id: str, chain: str, signed_transaction: str) -> Any:
        """Sends a signed transaction (idempotent by its hash); the gateway's Transaction."""
        response = await self._call(
            "BroadcastTransaction",
            chain_service.BroadcastTransactionRequest(
                request_id=request_id, chain=chain, signed_transaction=signed_transaction
            ),
        )
        return response.transaction

    async def transaction(self, chain: str, tx_hash: str) -> Any:
        """A broadcast transaction's status, confirmations and fee."""
        response = await self._call(
            "GetTransaction", chain_service.GetTransactionRequest(chain=chain, tx_hash=tx_hash)
        )
        return response.transaction


class Custody:
    """Custody's hot wallets, the deposit root, and signatures."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self._stub = custody_grpc.CustodyServiceStub(channel)
        self._wallets: dict[str, custody_resources.CustodyWallet] = {}
        self._root: custody_resources.CustodyWallet | None = None

    async def wallet(self, wallet_id: str) -> custody_resources.CustodyWallet:
        known = self._wallets.get(wallet_id)
        if known is not None:
            return known
        try:
            with as_service():
                found = await self._stub.GetCustodyWallet(
                    custody_service.GetCustodyWalletRequest(wallet_id=wallet_id), timeout=CALL_TIMEOUT_S
                )
        except grpc.aio.AioRpcError as error:
            raise remote.translate(error, "custody") from None
        self._wallets[wallet_id] = found.wallet
        return found.wallet

    async def deposit_root(self, chain: str) -> custody_resources.CustodyWallet:
        """The ACTIVE deposit root serving the chain (it signs for the deposit addresses)."""
        if self._root is not None:
            return self._root
        try:
            with as_service():
                found = await self._stub.ListCustodyWallets(
                    custody_service.ListCustodyWalletsRequest(
                        kind=custody_resources.WALLET_KIND_DEPOSIT_ROOT,
                        chain=chain,
                        state=custody_resources.CUSTODY_WALLET_STATE_ACTIVE,
                    ),
                    timeout=CALL_TIMEOUT_S,
                )
        except grpc.aio.AioRpcError as error:
            raise remote.translate(error, "custody") from None
        if not found.wallets:
            raise errors.InvalidState(
                f"custody has no active deposit root for {chain}", metadata={"chain": chain}
            )
        self._root = found.wallets[0]
        return self._root

    async def sign(
        self, request: custody_service.SignTransactionRequest
    ) -> custody_service.SignTransactionResponse:
        """Raw errors: the executor tells a refusal (never retried) from an outage (retried)."""
        with as_service():
            return await self._stub.SignTransaction(request, timeout=CALL_TIMEOUT_S)


class Wallets:
    """What the deposit service asks of the wallet service: the owner of a deposit address."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self._stub = wallet_grpc.WalletServiceStub(channel)

    async def resolve(self, chain: str, address: str) -> wallet_resources.Wallet | None:
        """The wallet whose deposit address this is, None if it is no deposit address."""
        try:
            response = await self._stub.ResolveDepositAddress(
                wallet_service.ResolveDepositAddressRequest(chain=chain, address=address),
                timeout=CALL_TIMEOUT_S,
            )
        except grpc.aio.AioRpcError as error:
            if error.code() is grpc.StatusCode.NOT_FOUND:
                return None
            raise remote.translate(error, "wallet") from None
        return response.wallet


def money(asset: str, amount: int) -> money_pb2.Money:
    """A Money message of base units."""
    return money_pb2.Money(asset=asset, amount=str(amount))
