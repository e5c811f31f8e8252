"""The web BFF's settings: the BFFs', with the contract's cap of 2 s per downstream."""

from __future__ import annotations

from pydantic import Field

from svc.bff.config import BffSettings


class WebBffSettings(BffSettings):
    """Settings of the web BFF (FINMESH_* variables)."""

    downstream_deadline_s: float = Field(default=2.0, gt=0, le=2.0)
