"""Registers custody's wallet addresses with the chain gateway's watch list, so that transfers to
hot and cold wallets are followed. Done in the background after CreateCustodyWallet commits (a
wallet is never lost because the gateway was down), idempotent by a wallet-derived request id, and
recorded once the gateway has it. Deposit roots have no address: their derived addresses are
registered by the services that hand them out."""

from __future__ import annotations

import time

import grpc
from finmesh.chain_gateway.v1 import chain_gateway_service_pb2 as gateway
from finmesh.chain_gateway.v1 import chain_gateway_service_pb2_grpc as gateway_grpc

from svc.custody import store
from svc.custody.domain import CUSTODY_PRINCIPAL
from svc.kit.db import Database

REGISTRATIONS_PER_ROUND_MAX = 100


class WatchRegistrar:
    def __init__(self, database: Database, channel: grpc.aio.Channel) -> None:
        self.database = database
        self.gateway = gateway_grpc.ChainGatewayServiceStub(channel)

    async def run_once(self) -> int:
        """Registers what is not registered yet; returns how many (wallet, chain) it registered."""
        async with self.database.transaction() as session:
            pending = await store.unwatched(session, REGISTRATIONS_PER_ROUND_MAX)
        for wallet, chain in pending:
            await self.gateway.CreateWatchedAddress(
                gateway.CreateWatchedAddressRequest(
                    request_id=f"custody.watch.{wallet.wallet_id}.{chain}",
                    chain=chain,
                    address=wallet.address,
                    owner=CUSTODY_PRINCIPAL,
                    reference=wallet.wallet_id,
                )
            )
            async with self.database.transaction() as session:
                await store.insert_watch_registration(
                    session, wallet.wallet_id, chain, time.time_ns() // 1000
                )
        return len(pending)
