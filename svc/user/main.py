"""Wiring: the user servicer over its database, the auth service (password credentials, step-up
tokens) and the account service (holdings, asked before closing)."""

from __future__ import annotations

from finmesh.user.v1 import user_service_pb2_grpc

from svc.kit.server import ServiceApp
from svc.kit.stepup import AuthStepUp
from svc.user.credentials import PasswordCredentials
from svc.user.holdings import AccountHoldings
from svc.user.server import UserServicer
from svc.user.verification import CodeSender

SERVICE_NAME = "finmesh.user.v1.UserService"


def build(app: ServiceApp) -> None:
    """Registers the user servicer."""
    auth = app.channel_to("auth")
    servicer = UserServicer(
        app.database,
        PasswordCredentials(auth),
        AccountHoldings(app.channel_to("account")),
        AuthStepUp(auth),
        CodeSender(app.channel_to("notification")),
    )
    app.add_servicer(user_service_pb2_grpc.add_UserServiceServicer_to_server, servicer, SERVICE_NAME)
