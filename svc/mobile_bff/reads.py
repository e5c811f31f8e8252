"""The mobile BFF's own downstream read: where and how the caller deposits an asset, from the
wallet service (the caller's deposit address on the chain) and the deposit service (minimum and
confirmations for the asset)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import grpc
from finmesh.common.v1 import money_pb2
from finmesh.deposit.v1 import deposit_service_pb2 as deposit_service
from finmesh.deposit.v1 import deposit_service_pb2_grpc as deposit_grpc
from finmesh.mobile_bff.v1 import mobile_bff_service_pb2 as mobile
from finmesh.wallet.v1 import wallet_service_pb2 as wallet_service
from finmesh.wallet.v1 import wallet_service_pb2_grpc as wallet_grpc

ME = "me"
# A user has one wallet per chain; the deposit service has one configuration per asset.
PAGE = 1000


class DepositReads:
    def __init__(self, channel_to: Callable[[str], grpc.aio.Channel]) -> None:
        self._channel_to = channel_to

    async def deposit_info(self, deadline_s: float, chain: str, asset: str) -> mobile.DepositInfo | None:
        """The caller's deposit address on `chain` and the deposit rules of `asset`; None when the
        caller has no wallet on the chain yet or the asset takes no deposits."""
        wallets = wallet_grpc.WalletServiceStub(self._channel_to("wallet"))
        deposits = deposit_grpc.DepositServiceStub(self._channel_to("deposit"))
        found_wallets, found_configs = await asyncio.gather(
            wallets.ListWallets(
                wallet_service.ListWalletsRequest(user_id=ME, page_size=PAGE), timeout=deadline_s
            ),
            deposits.ListDepositConfigs(
                deposit_service.ListDepositConfigsRequest(chain=chain, page_size=PAGE), timeout=deadline_s
            ),
        )
        wallet = next((found for found in found_wallets.wallets if found.chain == chain), None)
        config = next((found for found in found_configs.configs if found.asset == asset), None)
        if wallet is None or config is None:
            return None
        return mobile.DepositInfo(
            address=money_pb2.ChainAddress(chain=chain, address=wallet.deposit_address.address),
            minimum_amount=money_pb2.Money(asset=asset, amount=config.minimum_amount),
            confirmations_required=config.confirmation_depth,
        )
