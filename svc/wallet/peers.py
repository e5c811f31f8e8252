"""The wallet service's calls to its peers (custody, chain gateway, user, account, ledger), made as
the wallet service itself (never with the end user's token: an end user may not read custody's
key or other users), and their refusals passed on as our typed errors (svc/kit/remote.py)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc
from finmesh.account.v1 import account_resources_pb2 as account_resources
from finmesh.account.v1 import account_service_pb2 as account_service
from finmesh.account.v1 import account_service_pb2_grpc as account_grpc
from finmesh.chain_gateway.v1 import chain_gateway_resources_pb2 as chain_resources
from finmesh.chain_gateway.v1 import chain_gateway_service_pb2 as chain_service
from finmesh.chain_gateway.v1 import chain_gateway_service_pb2_grpc as chain_grpc
from finmesh.custody.v1 import custody_resources_pb2 as custody_resources
from finmesh.custody.v1 import custody_service_pb2 as custody_service
from finmesh.custody.v1 import custody_service_pb2_grpc as custody_grpc
from finmesh.ledger.v1 import ledger_resources_pb2 as ledger_resources
from finmesh.ledger.v1 import ledger_service_pb2 as ledger_service
from finmesh.ledger.v1 import ledger_service_pb2_grpc as ledger_grpc
from finmesh.user.v1 import user_service_pb2 as user_service
from finmesh.user.v1 import user_service_pb2_grpc as user_grpc

from svc.kit import remote
from svc.kit.client import as_service

# Calls made outside an RPC (background rounds) have no caller deadline to inherit.
CALL_TIMEOUT_S = 10.0
ACCOUNTS_PAGE_MAX = 1_000
ResponseT = TypeVar("ResponseT")


async def _call(peer: str, method: Callable[..., Awaitable[ResponseT]], request: Any) -> ResponseT:
    try:
        with as_service():
            return await method(request, timeout=CALL_TIMEOUT_S)
    except grpc.aio.AioRpcError as error:
        raise remote.translate(error, peer) from None


@dataclass(frozen=True)
class DepositRoot:
    """Custody's active deposit root for EVM chains: its account-level xpub."""

    custody_wallet_id: str
    xpub: str
    account_path: str
    fingerprint: str


class Custody:
    def __init__(self, channel: grpc.aio.Channel) -> None:
        self._stub = custody_grpc.CustodyServiceStub(channel)

    async def deposit_root(self) -> DepositRoot:
        """The extended public key deposit addresses are derived from (NOT_FOUND passes on)."""
        response = await _call(
            "custody",
            self._stub.GetExtendedPublicKey,
            custody_service.GetExtendedPublicKeyRequest(chain_family=custody_resources.CHAIN_FAMILY_EVM),
        )
        key = response.extended_public_key
        return DepositRoot(key.wallet_id, key.xpub, key.account_path, key.fingerprint)


class ChainGateway:
    def __init__(self, channel: grpc.aio.Channel) -> None:
        self._stub = chain_grpc.ChainGatewayServiceStub(channel)

    async def chain(self, chain: str) -> chain_resources.Chain:
        """A configured chain (NOT_FOUND passes on)."""
        response = await _call(
            "chain-gateway", self._stub.GetChain, chain_service.GetChainRequest(chain=chain)
        )
        return response.chain

    async def chains(self) -> list[chain_resources.Chain]:
        """Every configured chain."""
        response = await _call("chain-gateway", self._stub.ListChains, chain_service.ListChainsRequest())
        return list(response.chains)

    async def watch(self, chain: str, address: str, owner: str, reference: str) -> None:
        """Adds an address to the follower's watch list; idempotent per (chain, address)."""
        await _call(
            "chain-gateway",
            self._stub.CreateWatchedAddress,
            chain_service.CreateWatchedAddressRequest(
                request_id=f"wallet.watch.{reference}",
                chain=chain,
                address=address,
                owner=owner,
                reference=reference,
            ),
        )


class Users:
    def __init__(self, channel: grpc.aio.Channel) -> None:
        self._stub = user_grpc.UserServiceStub(channel)

    async def get(self, user_id: str) -> user_service.User:
        """A user by id (NOT_FOUND passes on)."""
        response = await _call("user", self._stub.GetUser, user_service.GetUserRequest(user_id=user_id))
        return response.user

    async def lookup(self, *, email: str = "", phone: str = "") -> user_service.User | None:
        """The non-closed user holding an identifier; None when there is none."""
        request = (
            user_service.LookupUserRequest(email=email)
            if email
            else user_service.LookupUserRequest(phone=phone)
        )
        try:
            with as_service():
                response = await self._stub.LookupUser(request, timeout=CALL_TIMEOUT_S)
        except grpc.aio.AioRpcError as error:
            if error.code() is grpc.StatusCode.NOT_FOUND:
                return None
            raise remote.translate(error, "user") from None
        return response.user


class Accounts:
    def __init__(self, channel: grpc.aio.Channel) -> None:
        self._stub = account_grpc.AccountServiceStub(channel)

    async def main_accounts(
        self, user_id: str, chain: str = "", asset: str = ""
    ) -> list[account_resources.Account]:
        """A user's MAIN accounts (every status), with balances, ordered by asset."""
        found: list[account_resources.Account] = []
        token = ""
        while True:
            response = await _call(
                "account",
                self._stub.ListAccounts,
                account_service.ListAccountsRequest(
                    user_id=user_id,
                    chain=chain,
                    asset=asset,
                    kind=account_resources.ACCOUNT_KIND_MAIN,
                    page_size=ACCOUNTS_PAGE_MAX,
                    page_token=token,
                    status=account_resources.ACCOUNT_STATUS_UNSPECIFIED,
                ),
            )
            found.extend(response.accounts)
            token = response.next_page_token
            if not token:
                return found

    async def fresh(
        self, accounts: list[account_resources.Account], min_sequence: int
    ) -> list[account_resources.Account]:
        """The accounts with balances reflecting at least ledger sequence `min_sequence`."""
        found: list[account_resources.Account] = []
        for start in range(0, len(accounts), ACCOUNTS_PAGE_MAX):
            response = await _call(
                "account",
                self._stub.BatchGetAccountBalances,
                account_service.BatchGetAccountBalancesRequest(
                    account_ids=[
                        account.account_id for account in accounts[start : start + ACCOUNTS_PAGE_MAX]
                    ],
                    min_sequence=min_sequence,
                ),
            )
            found.extend(response.accounts)
        return found

    async def open_main(self, user_id: str, asset: str, request_id: str) -> account_resources.Account:
        """The user's MAIN account of an asset, opened if it does not exist."""
        response = await _call(
            "account",
            self._stub.OpenAccount,
            account_service.OpenAccountRequest(
                request_id=request_id, user_id=user_id, asset=asset, kind=account_resources.ACCOUNT_KIND_MAIN
            ),
        )
        return response.account


class Ledger:
    def __init__(self, channel: grpc.aio.Channel) -> None:
        self._stub = ledger_grpc.LedgerServiceStub(channel)

    async def post(self, entry: ledger_resources.JournalEntry) -> ledger_resources.JournalEntry:
        """Commits an entry; a repeat of the same entry returns the original."""
        response = await _call(
            "ledger",
            self._stub.CreateJournalEntry,
            ledger_service.CreateJournalEntryRequest(request_id=entry.entry_id, entry=entry),
        )
        return response.entry

    async def reverse(
        self, entry_id: str, corrects_entry_id: str, category: str, description: str, correlation_id: str
    ) -> ledger_resources.JournalEntry:
        """Commits the CORRECTION entry mirroring `corrects_entry_id`; a repeat returns the original."""
        response = await _call(
            "ledger",
            self._stub.ReverseJournalEntry,
            ledger_service.ReverseJournalEntryRequest(
                request_id=entry_id,
                entry_id=entry_id,
                corrects_entry_id=corrects_entry_id,
                category=category,
                description=description,
                correlation_id=correlation_id,
            ),
        )
        return response.entry
