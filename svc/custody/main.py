"""Wiring: the key backends (the HSM when configured, envelopes under a master key otherwise), the
signing policy and the custody servicer."""

from __future__ import annotations

from finmesh.custody.v1 import custody_service_pb2_grpc

from svc.custody.approvals import trusted_issuers
from svc.custody.config import CustodySettings
from svc.custody.execution import MovementExecutor
from svc.custody.keys import (
    Backend,
    DepositRootKeys,
    EnvelopeKeys,
    Keys,
    Pkcs11Keys,
    Pkcs11Token,
    Pkcs11Wrapper,
)
from svc.custody.rebalance import ChainGatewayBalances, Rebalancer
from svc.custody.server import CustodyServicer
from svc.custody.signing import Signing
from svc.custody.watch import WatchRegistrar
from svc.kit.config import load_settings
from svc.kit.envelope import Envelope, SealingWrapper
from svc.kit.periodic import Periodic
from svc.kit.sealing import FileKeyProvider
from svc.kit.server import ServiceApp

SERVICE_NAME = "finmesh.custody.v1.CustodyService"


def build(app: ServiceApp) -> None:
    """Registers the custody servicer; with an HSM, its token is opened (and the envelope master key
    created inside it on first start) before the service reports SERVING."""
    settings = app.settings if isinstance(app.settings, CustodySettings) else load_settings(CustodySettings)
    keys: dict[Backend, Keys] = {}
    if settings.hsm_configured:
        token = Pkcs11Token(
            settings.hsm_module, settings.hsm_token_label, settings.hsm_pin.get_secret_value()
        )
        wrapper = Pkcs11Wrapper(token, settings.hsm_master_key_label)
        envelope = Envelope(wrapper)
        keys[Backend.HSM_PKCS11] = Pkcs11Keys(token)
        default_backend = Backend.HSM_PKCS11
        app.on_start(wrapper.ensure_key)
        app.on_stop(token.close)
    else:
        envelope = Envelope(SealingWrapper(FileKeyProvider(settings.master_key_path)))
        default_backend = Backend.SOFTWARE_ENVELOPE
    keys[Backend.SOFTWARE_ENVELOPE] = EnvelopeKeys(envelope)
    roots = DepositRootKeys(envelope)
    signing = Signing(
        app.database,
        keys,
        roots,
        trusted_issuers(settings.approval_issuers),
        settings.chains,
        settings.approval_lifetime_max_s,
    )
    gateway = app.channel_to("chain-gateway")
    rebalancer = Rebalancer(
        app.database, ChainGatewayBalances(gateway), approval_window_s=settings.movement_approval_window_s
    )
    servicer = CustodyServicer(
        app.database,
        keys,
        default_backend,
        roots,
        signing,
        settings.chains,
        settings.movement_approval_window_s,
        rebalancer,
    )
    app.add_servicer(custody_service_pb2_grpc.add_CustodyServiceServicer_to_server, servicer, SERVICE_NAME)
    # Background rounds, each against the chain gateway: watch registrations of new wallets,
    # execution of approved movements, and the hot-wallet policies' evaluation.
    rounds = [
        Periodic(
            "custody-watch", WatchRegistrar(app.database, gateway).run_once, settings.movement_interval_s
        ),
        Periodic(
            "custody-movements",
            MovementExecutor(app.database, signing, gateway).run_once,
            settings.movement_interval_s,
        ),
        Periodic("custody-rebalance", rebalancer.run_once, settings.rebalance_interval_s),
    ]
    for round_ in rounds:
        app.on_start(round_.start)
        app.on_stop(round_.stop)
