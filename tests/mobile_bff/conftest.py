"""The mobile BFF served by the kit in this process in front of the real services of
tests/harness/bff_mesh.py (one mesh per backend and module, BFFs started per test)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from finmesh.mobile_bff.v1 import mobile_bff_service_pb2_grpc as mobile_grpc

from svc.mobile_bff import main as mobile_main
from svc.mobile_bff.config import MobileBffSettings
from tests.harness.bff_mesh import BffStarter, Downstream, downstream

__all__ = ["downstream"]


@pytest.fixture
async def mobile_bff(downstream: Downstream, tmp_path: Path) -> AsyncIterator[BffStarter]:
    starter = BffStarter(
        "mobile-bff",
        mobile_main.build,
        MobileBffSettings,
        mobile_grpc.MobileBffServiceStub,
        downstream,
        tmp_path,
    )
    yield starter
    await starter.close()
