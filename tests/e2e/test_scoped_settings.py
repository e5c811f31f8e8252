"""The launcher's per-service settings, which the end-to-end profile relies on: settings sharing a
name across services (FINMESH_CHAINS of the chain gateway and of custody) are given to one child
as FINMESH_<SERVICE>__<NAME>."""

from __future__ import annotations

from pathlib import Path

import pytest

from svc.kit.launcher import Endpoint, Layout, child_environment


def _environment_of(service: str, tmp_path: Path) -> dict[str, str]:
    endpoint = Endpoint(service, f"finmesh.{service}.v1.Service", "127.0.0.1", 1, 2)
    return child_environment(endpoint, Layout(tmp_path), 5.0)


def test_a_scoped_setting_reaches_only_its_service(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("FINMESH_CHAINS", "shared")
    monkeypatch.setenv("FINMESH_CHAIN_GATEWAY__CHAINS", "gateway-chains")
    monkeypatch.setenv("FINMESH_CUSTODY__CHAINS", "custody-chains")
    monkeypatch.setenv("FINMESH_CUSTODY__", "no name: ignored")
    assert _environment_of("chain-gateway", tmp_path)["FINMESH_CHAINS"] == "gateway-chains"
    custody = _environment_of("custody", tmp_path)
    assert custody["FINMESH_CHAINS"] == "custody-chains"
    assert "FINMESH_" not in custody
    # A service with no scoped value keeps the shared one.
    assert _environment_of("wallet", tmp_path)["FINMESH_CHAINS"] == "shared"


def test_the_launcher_keeps_its_own_variables_over_a_scoped_one(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("FINMESH_LEDGER__PORT", "1234")
    environment = _environment_of("ledger", tmp_path)
    # Where a child listens is the launcher's plan, never a setting.
    assert environment["FINMESH_PORT"] == "1"
