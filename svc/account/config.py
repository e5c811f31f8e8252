"""The account service's settings: the kit's, plus the balance cache and the enabled assets."""

from __future__ import annotations

from pydantic import Field

from svc.kit.config import KitSettings

# Assets a user account may be opened for, with their decimals (for display). Deployments set
# FINMESH_ASSETS as JSON, for example {"ethereum:ETH": 18, "ethereum:USDC": 6}.
DEFAULT_ASSETS = {
    "ethereum:ETH": 18,
    "ethereum:USDC": 6,
    "ethereum:USDT": 6,
    "bsc:BNB": 18,
    "polygon:POL": 18,
    "arbitrum:ETH": 18,
}


class AccountSettings(KitSettings):
    """Settings of the account service (FINMESH_* variables)."""

    # Redis holding the balance cache, for example redis://127.0.0.1:6379/0; empty keeps the
    # cache in this process's memory.
    redis_url: str = ""
    assets: dict[str, int] = Field(default_factory=lambda: dict(DEFAULT_ASSETS))
    # A freeze hold with no freeze record is voided once it is this old: longer than any request
    # (and its ledger calls) could still be running. The sweep runs every orphan_sweep_interval_s.
    orphan_hold_age_s: float = Field(default=900.0, ge=60.0)
    orphan_sweep_interval_s: float = Field(default=60.0, gt=0)
