"""Wallet creation: the deposit address derived from custody's extended public key at the next
index of its deposit root, recorded with its path, then registered with the chain gateway's watch
list and announced (WalletCreated) once registered.

The index is taken in the transaction that records the wallet, from a counter row per deposit root
(locked by its UPDATE), so two creations never share an index, and a rolled-back creation gives its
index back. The wallet is recorded before the gateway call: if that call or the process fails
afterwards, the next CreateWallet of the user and chain, or the repair round, registers it, so an
allocated address is never left unwatched.
"""

from __future__ import annotations

import time
import uuid

from finmesh.chain_gateway.v1 import chain_gateway_resources_pb2 as chain_resources
from finmesh.user.v1 import user_service_pb2 as user_service
from sqlalchemy.exc import IntegrityError

from svc.kit import errors
from svc.kit.db import Database
from svc.kit.hd import DerivationError, ExtendedPublic, child_path, deposit_address
from svc.wallet import events, store
from svc.wallet.domain import WATCH_OWNER, Wallet, WalletState
from svc.wallet.peers import ChainGateway, Custody, Users

REPAIRS_PER_ROUND_MAX = 100


def _now_us() -> int:
    return time.time_ns() // 1000


class WalletAllocator:
    """Creates wallets and keeps every allocated address on the chain gateway's watch list."""

    def __init__(self, database: Database, custody: Custody, chains: ChainGateway, users: Users) -> None:
        self.database = database
        self.custody = custody
        self.chains = chains
        self.users = users

    async def _check(self, user_id: str, chain: str) -> None:
        user = await self.users.get(user_id)
        if user.status != user_service.USER_STATUS_ACTIVE:
            raise errors.InvalidState(
                "the user is frozen or closed",
                metadata={"user_id": user_id, "user_status": user_service.UserStatus.Name(user.status)},
            )
        found = await self.chains.chain(chain)
        if found.status == chain_resources.CHAIN_STATUS_DISABLED:
            raise errors.InvalidState(f"chain {chain} is disabled", metadata={"chain": chain})

    async def create(self, user_id: str, chain: str, request_id: str) -> Wallet:
        """The user's wallet on the chain: created with the next address, or the existing one."""
        await self._check(user_id, chain)
        root = await self.custody.deposit_root()
        account = ExtendedPublic.parse(root.xpub)
        if account.fingerprint.hex() != root.fingerprint:
            raise errors.DependencyUnavailable(
                "custody: the extended public key does not match its fingerprint",
                metadata={"service": "custody", "custody_wallet_id": root.custody_wallet_id},
            )
        await store.ensure_counter(self.database, root.custody_wallet_id)
        try:
            async with self.database.transaction() as session:
                existing = await store.wallet_by_owner(session, user_id, chain)
                if existing is not None:
                    return existing
                while True:
                    index = await store.allocate_index(session, root.custody_wallet_id)
                    try:
                        address = deposit_address(account, index)
                        break
                    except DerivationError:
                        continue  # BIP-32's invalid child (probability ~2^-127): the index is skipped
                now_us = _now_us()
                wallet = Wallet(
                    wallet_id=str(uuid.uuid4()),
                    user_id=user_id,
                    chain=chain,
                    address=address,
                    address_lower=address.lower(),
                    derivation_path=child_path(root.account_path, index),
                    address_index=index,
                    custody_wallet_id=root.custody_wallet_id,
                    xpub_fingerprint=root.fingerprint,
                    state=WalletState.ACTIVE,
                    request_id=request_id,
                    watched=False,
                    version=1,
                    create_time_us=now_us,
                    update_time_us=now_us,
                )
                await store.insert_wallet(session, wallet)
                return wallet
        except IntegrityError:
            # A concurrent creation for the same user and chain won; its wallet is the user's.
            async with self.database.transaction() as session:
                existing = await store.wallet_by_owner(session, user_id, chain)
            if existing is None:
                raise
            return existing

    async def register(self, wallet: Wallet) -> Wallet:
        """Puts the address on the watch list (idempotent), then records it and publishes WalletCreated."""
        await self.chains.watch(wallet.chain, wallet.address, WATCH_OWNER, wallet.wallet_id)
        async with self.database.transaction() as session:
            marked = await store.mark_watched(session, wallet, _now_us())
            if marked is None:
                found = await store.wallet_by_owner(session, wallet.user_id, wallet.chain)
                assert found is not None and found.watched, wallet
                return found
            await events.publish_wallet_created(session, marked)
            return marked

    async def repair(self) -> int:
        """Registers wallets left unwatched by a failure; returns how many."""
        async with self.database.transaction() as session:
            pending = await store.unwatched_wallets(session, REPAIRS_PER_ROUND_MAX)
        for wallet in pending:
            await self.register(wallet)
        return len(pending)
