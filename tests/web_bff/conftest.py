"""The web BFF served by the kit in this process in front of the real services of
tests/harness/bff_mesh.py (one mesh per backend and module, BFFs started per test)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from finmesh.web_bff.v1 import web_bff_service_pb2_grpc as web_grpc

from svc.web_bff import main as web_main
from svc.web_bff.config import WebBffSettings
from tests.harness.bff_mesh import BffStarter, Downstream, downstream

__all__ = ["downstream"]


@pytest.fixture
async def web_bff(downstream: Downstream, tmp_path: Path) -> AsyncIterator[BffStarter]:
    starter = BffStarter(
        "web-bff", web_main.build, WebBffSettings, web_grpc.WebBffServiceStub, downstream, tmp_path
    )
    yield starter
    await starter.close()
