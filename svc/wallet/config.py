"""The wallet service's settings: the kit's, plus the background round that completes watch registrations."""

from __future__ import annotations

from pydantic import Field

from svc.kit.config import KitSettings


class WalletSettings(KitSettings):
    """Settings of the wallet service (FINMESH_* variables)."""

    # A wallet whose watch registration did not complete inside CreateWallet (the chain gateway
    # failed after the wallet was recorded) is registered by a background round this often.
    watch_repair_interval_s: float = Field(default=10.0, gt=0)
