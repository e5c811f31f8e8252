"""WalletService: translates the contract's messages to the domain and back, and sequences the
calls to the peers and the local transactions of each operation."""

from __future__ import annotations

import hashlib
from typing import Any

from finmesh.account.v1 import account_resources_pb2 as account_resources
from finmesh.common.v1 import money_pb2
from finmesh.wallet.v1 import wallet_resources_pb2 as resources
from finmesh.wallet.v1 import wallet_service_pb2 as service
from finmesh.wallet.v1 import wallet_service_pb2_grpc as service_grpc
from google.protobuf.message import Message
from sqlalchemy.ext.asyncio import AsyncSession

from svc.kit import errors, idempotency, paging, principals
from svc.kit.db import Database
from svc.wallet import convert, store
from svc.wallet.allocation import WalletAllocator
from svc.wallet.domain import ME, InternalTransfer
from svc.wallet.peers import Accounts, ChainGateway
from svc.wallet.transfers import InternalTransfers

SERVICE = "/finmesh.wallet.v1.WalletService/"
READER_ROLES = frozenset({"support", "operator", "approver", "admin", "auditor"})
EVERY_CHAIN = "-"
INCOMING = resources.TRANSFER_DIRECTION_INCOMING
OUTGOING = resources.TRANSFER_DIRECTION_OUTGOING


def acting_for(requested: str) -> str:
    """The user a request names (`me`: the caller); an end user acts only for themselves."""
    user = principals.end_user()
    if requested == ME:
        if user is None:
            raise errors.InvalidArgument([errors.FieldViolation("user_id", "`me` needs an end user")])
        return user.subject
    if user is not None and user.subject != requested:
        raise errors.PermissionDenied("end users act only for themselves", metadata={"user_id": requested})
    return requested


def reading_for(requested: str) -> str:
    """The user a read names (`me`: the caller); staff readers and services read any user."""
    user = principals.end_user()
    if requested == ME or user is None or not user.roles & READER_ROLES:
        return acting_for(requested)
    return requested


def scoped(method: str, user_id: str) -> str:
    """The idempotency scope of a user's request: one user's request_id never replays another's."""
    return f"{SERVICE}{method}/{user_id}"


def resolved(request: Message, user_id: str) -> Message:
    """The request with `me` replaced by the user id, as its idempotency fingerprint sees it."""
    copy = type(request)()
    copy.CopyFrom(request)
    setattr(copy, "user_id", user_id)  # noqa: B010 (every request passed here has user_id)
    return copy


def chain_filter(chain: str) -> str:
    """A List method's `{chain}`: '' for every chain (`-`)."""
    return "" if chain == EVERY_CHAIN else chain


def time_us(message: Message, name: str) -> int | None:
    return int(getattr(message, name).ToMicroseconds()) if message.HasField(name) else None


def filters_digest(request: Message, *names: str) -> str:
    """A digest of a listing's filters: a page token is honoured only with the same filters."""
    copy = type(request)()
    copy.CopyFrom(request)
    for name in names:
        copy.ClearField(name)
    return hashlib.sha256(copy.SerializeToString(deterministic=True)).hexdigest()[:16]


def bound_position(token: str, digest: str, *names: str) -> tuple[Any, ...] | None:
    """The keyset position of a page token issued for the same filters; INVALID_ARGUMENT otherwise."""
    position = paging.position(token, *names, "filters")
    if position is None:
        return None
    if position[-1] != digest:
        raise errors.InvalidArgument(
            [errors.FieldViolation("page_token", "the filters differ from those the token was issued for")]
        )
    return position[:-1]


def bound_token(values: dict[str, Any], digest: str) -> str:
    return paging.encode_token({**values, "filters": digest})


def zero_balance(asset: money_pb2.Asset) -> resources.AssetBalance:
    """An asset the user never held: zero as of any entry, so `as_of_sequence` is 0."""
    return resources.AssetBalance(
        asset=asset, available="0", held="0", frozen="0", pending_incoming="0", total="0"
    )


def account_balance(account: account_resources.Account, asset: money_pb2.Asset) -> resources.AssetBalance:
    """A MAIN account's balance as the contract's AssetBalance, as of the ledger entry it reflects."""
    balance = account.balance
    return resources.AssetBalance(
        asset=asset,
        available=balance.available,
        held=balance.held,
        frozen=balance.frozen,
        pending_incoming=balance.pending_incoming,
        total=balance.total,
        as_of_sequence=balance.as_of_sequence,
        as_of_time=balance.as_of_time,
    )


def fallback_asset(account: account_resources.Account) -> money_pb2.Asset:
    """An asset the chain gateway does not list, described from the account."""
    chain, _, symbol = account.asset.partition(":")
    return money_pb2.Asset(id=account.asset, symbol=symbol, chain=chain, decimals=account.decimals)


class WalletServicer(service_grpc.WalletServiceServicer):
    """The wallet service's gRPC surface over its store, its allocator and its peers."""

    def __init__(
        self,
        database: Database,
        allocator: WalletAllocator,
        chains: ChainGateway,
        accounts: Accounts,
        transfers: InternalTransfers,
    ) -> None:
        self.database = database
        self.allocator = allocator
        self.chains = chains
        self.accounts = accounts
        self.transfers = transfers

    # Wallets

    async def CreateWallet(self, request: service.CreateWalletRequest, context: Any) -> Any:
        """The user's wallet on a chain, created with its watched deposit address if it is new."""
        user_id = acting_for(request.user_id)
        method = scoped("CreateWallet", user_id)
        keyed = resolved(request, user_id)
        async with self.database.transaction() as session:
            replay = await idempotency.lookup(session, method, keyed, service.CreateWalletResponse)
            if replay is not None:
                return replay
            wallet = await store.wallet_by_owner(session, user_id, request.chain)
        if wallet is None:
            wallet = await self.allocator.create(user_id, request.chain, request.request_id)
        if not wallet.watched:
            wallet = await self.allocator.register(wallet)
        response = service.CreateWalletResponse(
            wallet=convert.wallet_message(wallet), created=wallet.request_id == request.request_id
        )

        async def work(_session: Any) -> service.CreateWalletResponse:
            return response

        return await idempotency.run_once(self.database, method, keyed, service.CreateWalletResponse, work)

    async def GetWallet(self, request: service.GetWalletRequest, context: Any) -> Any:
        """A user's wallet on one chain."""
        user_id = reading_for(request.user_id)
        async with self.database.transaction() as session:
            wallet = await store.wallet_by_owner(session, user_id, request.chain)
        if wallet is None:
            raise errors.NotFound(
                f"no wallet on {request.chain}", metadata={"user_id": user_id, "chain": request.chain}
            )
        return service.GetWalletResponse(wallet=convert.wallet_message(wallet))

    async def ListWallets(self, request: service.ListWalletsRequest, context: Any) -> Any:
        """A user's wallets ordered by chain."""
        user_id = reading_for(request.user_id)
        limit = paging.page_size(request.page_size)
        position = paging.position(request.page_token, "chain")
        async with self.database.transaction() as session:
            found = await store.list_wallets(
                session, user_id, after=str(position[0]) if position else None, limit=limit + 1
            )
        return service.ListWalletsResponse(
            wallets=[convert.wallet_message(wallet) for wallet in found[:limit]],
            next_page_token=paging.next_token(found, limit, "chain"),
        )

    async def ResolveDepositAddress(self, request: service.ResolveDepositAddressRequest, context: Any) -> Any:
        """The wallet owning a deposit address (services and staff readers)."""
        principals.service_or_roles(READER_ROLES, "resolving deposit addresses")
        async with self.database.transaction() as session:
            wallet = await store.wallet_by_address(session, request.chain, request.address)
        if wallet is None:
            raise errors.NotFound(
                f"{request.address} is not a deposit address on {request.chain}",
                metadata={"chain": request.chain, "address": request.address},
            )
        return service.ResolveDepositAddressResponse(wallet=convert.wallet_message(wallet))

    # Balances

    async def _assets(self, chain: str) -> dict[str, money_pb2.Asset]:
        """The supported assets of a chain ('' for every chain), by asset id, from the chain gateway."""
        chains = [await self.chains.chain(chain)] if chain else await self.chains.chains()
        found: dict[str, money_pb2.Asset] = {}
        for item in chains:
            for asset in (item.native_asset, *item.tokens):
                found[asset.id] = asset
        return found

    async def ListBalances(self, request: service.ListBalancesRequest, context: Any) -> Any:
        """Balances per asset from the user's MAIN accounts (and zeros for unheld assets if asked)."""
        user_id = reading_for(request.user_id)
        chain = chain_filter(request.chain)
        limit = paging.page_size(request.page_size)
        digest = filters_digest(request, "page_size", "page_token")
        position = bound_position(request.page_token, digest, "asset")
        accounts = await self.accounts.main_accounts(user_id, chain=chain)
        async with self.database.transaction() as session:
            min_sequence = await store.last_sequence(session, user_id)
        if accounts and min_sequence:
            # The account service's cache follows the ledger's events; the user's own transfers
            # are read back at least as of their entries.
            accounts = await self.accounts.fresh(accounts, min_sequence)
        try:
            assets = await self._assets(chain)
        except errors.DependencyUnavailable:
            if request.include_zero:
                raise
            assets = {}  # held balances are still shown, described from their accounts
        rows = {
            account.asset: account_balance(account, assets.get(account.asset) or fallback_asset(account))
            for account in accounts
        }
        if request.include_zero:
            for asset_id, asset in assets.items():
                rows.setdefault(asset_id, zero_balance(asset))
        ordered = [rows[asset_id] for asset_id in sorted(rows) if position is None or asset_id > position[0]]
        response = service.ListBalancesResponse(balances=ordered[:limit])
        if len(ordered) > limit:
            response.next_page_token = bound_token({"asset": ordered[limit - 1].asset.id}, digest)
        return response

    # Internal transfers

    async def CreateInternalTransfer(
        self, request: service.CreateInternalTransferRequest, context: Any
    ) -> Any:
        """Moves an asset from the caller to another user in one ledger entry; once per request id."""
        caller = principals.require_end_user()
        sender_id = acting_for(request.user_id)
        assert sender_id == caller.subject
        method = scoped("CreateInternalTransfer", sender_id)
        keyed = resolved(request, sender_id)
        async with self.database.transaction() as session:
            replay = await idempotency.lookup(session, method, keyed, service.CreateInternalTransferResponse)
        if replay is not None:
            return replay
        transfer = await self.transfers.post(sender_id, request)

        async def work(session: AsyncSession) -> service.CreateInternalTransferResponse:
            existing = await store.transfer_by_id(session, transfer.transfer_id)
            if existing is None:
                await self.transfers.record(session, transfer)
                existing = transfer
            elif existing.request_id != request.request_id or existing.amount != transfer.amount:
                raise errors.IdempotencyKeyReused(
                    "request_id already made another transfer", metadata={"transfer_id": existing.transfer_id}
                )
            return service.CreateInternalTransferResponse(transfer=convert.transfer_message(existing))

        return await idempotency.run_once(
            self.database, method, keyed, service.CreateInternalTransferResponse, work
        )

    async def _visible_transfer(
        self, session: AsyncSession, user_id: str, chain: str, transfer_id: str
    ) -> InternalTransfer:
        transfer = await store.transfer_by_id(session, transfer_id)
        if (
            transfer is None
            or user_id not in (transfer.from_user_id, transfer.to_user_id)
            or (chain and transfer.chain != chain)
        ):
            raise errors.NotFound(
                f"no internal transfer {transfer_id}", metadata={"transfer_id": transfer_id}
            )
        return transfer

    async def GetInternalTransfer(self, request: service.GetInternalTransferRequest, context: Any) -> Any:
        """A transfer the user sent or received."""
        user_id = reading_for(request.user_id)
        async with self.database.transaction() as session:
            transfer = await self._visible_transfer(
                session, user_id, chain_filter(request.chain), request.transfer_id
            )
        return service.GetInternalTransferResponse(transfer=convert.transfer_message(transfer))

    async def ReverseInternalTransfer(
        self, request: service.ReverseInternalTransferRequest, context: Any
    ) -> Any:
        """COMPLETED -> REVERSED by a correcting ledger entry (internal: the admin service)."""
        if principals.end_user() is not None:
            raise errors.PermissionDenied("reversals are made by the admin service's maker-checker only")

        async def work(session: AsyncSession) -> service.ReverseInternalTransferResponse:
            reversed_ = await self.transfers.reverse(session, request)
            return service.ReverseInternalTransferResponse(transfer=convert.transfer_message(reversed_))

        return await idempotency.run_once(
            self.database,
            SERVICE + "ReverseInternalTransfer",
            request,
            service.ReverseInternalTransferResponse,
            work,
        )

    async def ListInternalTransfers(self, request: service.ListInternalTransfersRequest, context: Any) -> Any:
        """Transfers the user sent or received, newest first."""
        user_id = reading_for(request.user_id)
        limit = paging.page_size(request.page_size)
        digest = filters_digest(request, "page_size", "page_token")
        position = bound_position(request.page_token, digest, "create_time_us", "transfer_id")
        async with self.database.transaction() as session:
            found = await store.list_transfers(
                session,
                user_id,
                chain=chain_filter(request.chain),
                incoming=request.direction != OUTGOING,
                outgoing=request.direction != INCOMING,
                asset=request.asset,
                create_after_us=time_us(request, "create_after"),
                create_before_us=time_us(request, "create_before"),
                after=(int(position[0]), str(position[1])) if position else None,
                limit=limit + 1,
            )
        response = service.ListInternalTransfersResponse(
            transfers=[convert.transfer_message(transfer) for transfer in found[:limit]]
        )
        if len(found) > limit:
            last = found[limit - 1]
            response.next_page_token = bound_token(
                {"create_time_us": last.create_time_us, "transfer_id": last.transfer_id}, digest
            )
        return response

    # History

    async def ListWalletTransactions(
        self, request: service.ListWalletTransactionsRequest, context: Any
    ) -> Any:
        """The user's unified history, newest first (a projection: it may lag its sources)."""
        user_id = reading_for(request.user_id)
        limit = paging.page_size(request.page_size)
        digest = filters_digest(request, "page_size", "page_token")
        position = bound_position(request.page_token, digest, "create_time_us", "entry_id")
        async with self.database.transaction() as session:
            found = await store.list_history(
                session,
                user_id,
                chain=chain_filter(request.chain),
                kinds=[int(kind) for kind in request.kinds],
                statuses=[int(status) for status in request.statuses],
                asset=request.asset,
                create_after_us=time_us(request, "create_after"),
                create_before_us=time_us(request, "create_before"),
                after=(int(position[0]), str(position[1])) if position else None,
                limit=limit + 1,
            )
        response = service.ListWalletTransactionsResponse(
            transactions=[convert.history_message(entry) for entry in found[:limit]]
        )
        if len(found) > limit:
            last = found[limit - 1]
            response.next_page_token = bound_token(
                {"create_time_us": last.create_time_us, "entry_id": last.entry_id}, digest
            )
        return response
