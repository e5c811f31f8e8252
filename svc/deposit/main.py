"""Wiring: the deposit servicer, the consumers of the chain gateway's transfer events and of the
wallet service's wallet events, the credit round, the sweep executor and the sweep schedule."""

from __future__ import annotations

from finmesh.deposit.v1 import deposit_service_pb2_grpc

from svc.deposit import events
from svc.deposit.config import DepositSettings
from svc.deposit.peers import Accounts, Chains, Custody, Gateway, Ledger, Wallets
from svc.deposit.processor import Processor
from svc.deposit.server import DepositServicer
from svc.deposit.sweeping import SweepExecutor
from svc.deposit.sweeps import Sweeper
from svc.kit.approvals import ClaimsSigner, load_key
from svc.kit.config import load_settings
from svc.kit.consumer import EventConsumer
from svc.kit.periodic import Periodic
from svc.kit.server import ServiceApp

SERVICE_NAME = "finmesh.deposit.v1.DepositService"


def build(app: ServiceApp) -> None:
    """Registers the deposit servicer; the consumers and the credit round run while it serves."""
    settings = app.settings if isinstance(app.settings, DepositSettings) else load_settings(DepositSettings)
    chains = Chains(app.channel_to("chain-gateway"), settings.chain_status_ttl_s)
    ledger = Ledger(app.channel_to("ledger"))
    custody = Custody(app.channel_to("custody"))
    processor = Processor(
        app.database, ledger, Accounts(app.channel_to("account")), chains, Wallets(app.channel_to("wallet"))
    )
    key = load_key(settings.approval_private_key.get_secret_value(), settings.approval_private_key_file)
    signer = ClaimsSigner(key, settings.approval_key_id, settings.approval_lifetime_s) if key else None
    sweeper = Sweeper(app.database, settings, ledger, chains, custody, can_sign=signer is not None)
    executor = SweepExecutor(app.database, settings, ledger, Gateway(chains.stub), custody, signer)
    servicer = DepositServicer(app.database, processor, chains, sweeper)
    app.add_servicer(deposit_service_pb2_grpc.add_DepositServiceServicer_to_server, servicer, SERVICE_NAME)
    wallets = EventConsumer(
        app.database, app.bus, name=events.WALLETS_CONSUMER, topics=[events.WALLETS_TOPIC],
        handler=events.WalletHandler(),
    )  # fmt: skip
    transfers = EventConsumer(
        app.database,
        app.bus,
        name=events.TRANSFERS_CONSUMER,
        topics=[events.TRANSFERS_TOPIC],
        handler=processor,
    )
    credits = Periodic("deposit-credits", processor.run_once, settings.credit_interval_s)
    sweeps = Periodic("deposit-sweeps", executor.run_once, settings.sweep_interval_s)
    components: list[EventConsumer | Periodic] = [wallets, transfers, credits, sweeps]
    if settings.scheduled_sweeps_enabled:
        components.append(
            Periodic("deposit-sweep-schedule", sweeper.schedule_once, settings.scheduled_sweep_interval_s)
        )
    for component in components:
        app.on_start(component.start)
        app.on_stop(component.stop)
