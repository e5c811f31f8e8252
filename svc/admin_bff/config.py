"""The admin BFF's settings: the BFFs', with the contract's cap of 3 s per downstream."""

from __future__ import annotations

from pydantic import Field

from svc.bff.config import BffSettings


class AdminBffSettings(BffSettings):
    """Settings of the admin BFF (FINMESH_* variables)."""

    downstream_deadline_s: float = Field(default=3.0, gt=0, le=3.0)
