"""Settings every BFF has: the product profile it is deployed in, and its downstream deadline."""

from __future__ import annotations

from pydantic import Field

from svc.kit.catalog import FULL_PROFILE
from svc.kit.config import KitSettings


class BffSettings(KitSettings):
    """Settings of a BFF (FINMESH_* variables); each BFF sets its contract's deadline cap."""

    # Services outside this product profile are not called: their sections are DISABLED.
    product_profile: str = FULL_PROFILE
    # At most this long per downstream call (the incoming deadline, less a margin, when shorter).
    downstream_deadline_s: float = Field(default=2.0, gt=0, le=30)
