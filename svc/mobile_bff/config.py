"""The mobile BFF's settings: the BFFs', with the contract's cap of 1.5 s per downstream, and what
the apps read at start-up (GetBootstrap): the app releases per platform, the supported assets,
notices, the terms version and the support contact."""

from __future__ import annotations

import re
from datetime import datetime

from pydantic import BaseModel, Field, field_validator, model_validator

from svc.bff.config import BffSettings

SEMVER = re.compile(r"^[0-9]{1,4}\.[0-9]{1,4}\.[0-9]{1,4}$")
ASSET_ID = re.compile(r"^[a-z0-9][a-z0-9-]{0,31}:[A-Za-z0-9.]{1,16}$")
# The assets a fresh deployment supports (asset id -> decimals), as the account service enables them.
DEFAULT_SUPPORTED_ASSETS = {"ethereum:ETH": 18, "ethereum:USDC": 6, "ethereum:USDT": 6}


def version_key(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split("."))


class AppRelease(BaseModel):
    """The app versions of one platform: the oldest still allowed and the latest published."""

    minimum_version: str = "1.0.0"
    latest_version: str = "1.0.0"

    @model_validator(mode="after")
    def _ordered(self) -> AppRelease:
        for version in (self.minimum_version, self.latest_version):
            if not SEMVER.match(version):
                raise ValueError(f"{version!r} is not a version MAJOR.MINOR.PATCH")
        if version_key(self.minimum_version) > version_key(self.latest_version):
            raise ValueError("the minimum version is above the latest version")
        return self


class NoticeSettings(BaseModel):
    """A notice every app shows (maintenance, incident) from `start_time` until `end_time`."""

    severity: str = Field(default="info", pattern="^(info|warning|critical)$")
    title: str = Field(min_length=1, max_length=120)
    text: str = Field(default="", max_length=2000)
    start_time: datetime
    end_time: datetime | None = None


class MobileBffSettings(BffSettings):
    """Settings of the mobile BFF (FINMESH_* variables)."""

    downstream_deadline_s: float = Field(default=1.5, gt=0, le=1.5)
    # Platform (`ios`, `android`) -> its app releases.
    app_releases: dict[str, AppRelease] = Field(
        default_factory=lambda: {"ios": AppRelease(), "android": AppRelease()}
    )
    # Asset id -> decimals.
    supported_assets: dict[str, int] = Field(default_factory=lambda: dict(DEFAULT_SUPPORTED_ASSETS))
    # Asset valuations are expressed in; empty while no price feed is deployed.
    valuation_asset: str = ""
    notices: list[NoticeSettings] = Field(default_factory=list)
    terms_version: str = "2024-06"
    support_contact: str = "support@finmesh.example"

    @field_validator("app_releases")
    @classmethod
    def _known_platforms(cls, releases: dict[str, AppRelease]) -> dict[str, AppRelease]:
        unknown = set(releases) - {"ios", "android"}
        if unknown:
            raise ValueError(f"unknown platforms {sorted(unknown)}: ios, android")
        return releases

    @model_validator(mode="after")
    def _assets(self) -> MobileBffSettings:
        for asset, decimals in self.supported_assets.items():
            if not ASSET_ID.match(asset) or not 0 <= decimals <= 36:
                raise ValueError(f"supported asset {asset!r} ({decimals} decimals) is not <chain>:<symbol>")
        if self.valuation_asset and self.valuation_asset not in self.supported_assets:
            raise ValueError(f"the valuation asset {self.valuation_asset!r} is not a supported asset")
        return self
