"""Wiring: the withdraw servicer over its lifecycle, and the background worker that resumes,
expires, settles and executes withdrawals."""

from __future__ import annotations

from finmesh.withdraw.v1 import withdraw_service_pb2_grpc

from svc.kit.config import load_settings
from svc.kit.periodic import Periodic
from svc.kit.server import ServiceApp
from svc.withdraw.approvals import ApprovalIssuer, load_key
from svc.withdraw.config import WithdrawSettings
from svc.withdraw.execution import Executor
from svc.withdraw.flow import Lifecycle
from svc.withdraw.peers import Accounts, Codes, Custody, Kyc, Ledger, StepUp
from svc.withdraw.server import WithdrawServicer

SERVICE_NAME = "finmesh.withdraw.v1.WithdrawService"


def wire(app: ServiceApp) -> WithdrawServicer:
    """Registers the servicer and the worker; returns the servicer (tests drive its executor)."""
    settings = app.settings if isinstance(app.settings, WithdrawSettings) else load_settings(WithdrawSettings)
    codes = Codes(
        settings.custody_account_code, settings.fee_revenue_account_code, settings.gas_expense_account_code
    )
    ledger = Ledger(app.channel_to("ledger"), codes)
    kyc = Kyc(app.channel_to("kyc") if settings.kyc_enabled else None)
    lifecycle = Lifecycle(app.database, settings, ledger, kyc)
    key = load_key(settings.approval_private_key.get_secret_value(), settings.approval_private_key_file)
    issuer = (
        ApprovalIssuer(key, settings.approval_key_id, settings.approval_lifetime_s, settings.fee_cap_per_gas)
        if key is not None
        else None
    )
    executor = Executor(
        app.database,
        settings,
        lifecycle,
        app.channel_to("chain-gateway"),
        Custody(app.channel_to("custody")),
        issuer,
    )
    servicer = WithdrawServicer(
        app.database,
        settings,
        lifecycle,
        executor,
        StepUp(app.channel_to("auth")),
        Accounts(app.channel_to("account")),
        kyc,
    )
    app.add_servicer(withdraw_service_pb2_grpc.add_WithdrawServiceServicer_to_server, servicer, SERVICE_NAME)
    worker = Periodic("withdraw-execution", executor.run_once, settings.execution_interval_s)
    app.on_start(worker.start)
    app.on_stop(worker.stop)
    return servicer


def build(app: ServiceApp) -> None:
    wire(app)
