"""Wiring: the ledger servicer over one group-commit writer, and the hold expiry sweeper."""

from __future__ import annotations

from finmesh.ledger.v1 import ledger_service_pb2_grpc

from svc.kit.server import ServiceApp
from svc.ledger.server import LedgerServicer
from svc.ledger.writer import ExpirySweeper, Writer

SERVICE_NAME = "finmesh.ledger.v1.LedgerService"


def build(app: ServiceApp) -> None:
    """Registers the ledger servicer; the writer and the sweeper run on the serving event loop."""
    writer = Writer(app.database)
    app.add_servicer(
        ledger_service_pb2_grpc.add_LedgerServiceServicer_to_server,
        LedgerServicer(app.database, writer),
        SERVICE_NAME,
    )
    sweeper = ExpirySweeper(app.database, writer)

    async def start_sweeper() -> None:
        sweeper.start()

    app.on_start(start_sweeper)
    app.on_stop(sweeper.stop)
    app.on_stop(writer.stop)
