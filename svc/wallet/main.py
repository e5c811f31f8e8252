"""Wiring: the wallet servicer over custody, the chain gateway, user, account and ledger, and the
round that registers wallets whose watch registration a failure interrupted."""

from __future__ import annotations

from finmesh.wallet.v1 import wallet_service_pb2_grpc

from svc.kit.config import load_settings
from svc.kit.consumer import EventConsumer
from svc.kit.periodic import Periodic
from svc.kit.server import ServiceApp
from svc.wallet import projection
from svc.wallet.allocation import WalletAllocator
from svc.wallet.config import WalletSettings
from svc.wallet.peers import Accounts, ChainGateway, Custody, Ledger, Users
from svc.wallet.server import WalletServicer
from svc.wallet.transfers import InternalTransfers

SERVICE_NAME = "finmesh.wallet.v1.WalletService"


def build(app: ServiceApp) -> None:
    """Registers the wallet servicer; the history consumer and the repair round run while it serves."""
    settings = app.settings if isinstance(app.settings, WalletSettings) else load_settings(WalletSettings)
    chains = ChainGateway(app.channel_to("chain-gateway"))
    users = Users(app.channel_to("user"))
    accounts = Accounts(app.channel_to("account"))
    allocator = WalletAllocator(app.database, Custody(app.channel_to("custody")), chains, users)
    transfers = InternalTransfers(users, accounts, Ledger(app.channel_to("ledger")))
    servicer = WalletServicer(app.database, allocator, chains, accounts, transfers)
    app.add_servicer(wallet_service_pb2_grpc.add_WalletServiceServicer_to_server, servicer, SERVICE_NAME)
    history = EventConsumer(
        app.database,
        app.bus,
        name=projection.CONSUMER,
        topics=list(projection.TOPICS),
        handler=projection.handle,
    )
    repair = Periodic("wallet-watch-repair", allocator.repair, settings.watch_repair_interval_s)
    app.on_start(history.start)
    app.on_start(repair.start)
    app.on_stop(history.stop)
    app.on_stop(repair.stop)
