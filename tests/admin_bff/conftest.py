"""The admin BFF served by the kit in this process in front of the real services of
tests/harness/bff_mesh.py (one mesh per backend and module, BFFs started per test)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from finmesh.admin_bff.v1 import admin_bff_service_pb2_grpc as admin_grpc

from svc.admin_bff import main as admin_main
from svc.admin_bff.config import AdminBffSettings
from tests.harness.bff_mesh import BffStarter, Downstream, downstream

__all__ = ["downstream"]


@pytest.fixture
async def admin_bff(downstream: Downstream, tmp_path: Path) -> AsyncIterator[BffStarter]:
    starter = BffStarter(
        "admin-bff", admin_main.build, AdminBffSettings, admin_grpc.AdminBffServiceStub, downstream, tmp_path
    )
    yield starter
    await starter.close()
