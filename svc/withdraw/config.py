"""The withdraw service's settings: the kit's, plus the assets it pays out (fees, limits per KYC
level, risk thresholds), the approval policy, the approval-issuing key custody trusts, the hot
wallet of each chain, the ledger accounts it books to and the execution policy."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, Field, SecretStr, model_validator

from svc.kit.config import KitSettings

# KYC levels as the contract numbers them (finmesh.common.v1.KycLevel): L0 = 1 ... L3 = 4.
KYC_LEVEL_L0 = 1
KYC_LEVELS = (1, 2, 3, 4)


class LevelLimits(BaseModel):
    """What a user of one KYC level may withdraw of one asset."""

    allowed: bool = True
    # Largest amount per withdrawal, base units.
    max_amount: int = Field(gt=0)
    # Most per rolling 24 hours (requested and not ended unpaid), base units.
    daily_limit: int = Field(gt=0)


class AssetPolicy(BaseModel):
    """One withdrawable asset: its fee, limits and the thresholds of the built-in risk rules."""

    # Flat fee charged to the user per withdrawal, in the asset's base units.
    fee: int = Field(ge=0)
    min_amount: int = Field(default=1, gt=0)
    # Limits per KYC level (1 = L0 ... 4 = L3); a level without an entry may not withdraw.
    limits: dict[int, LevelLimits]
    # Below this amount (and risk ALLOW) a withdrawal is approved without approvers.
    auto_approval_threshold: int = Field(gt=0)
    # Built-in rules: one withdrawal at or above this amount goes to review.
    review_amount: int = Field(gt=0)
    # Built-in rules: the user's 24-hour total at or above this goes to review.
    daily_review_amount: int = Field(gt=0)
    # Built-in rules: a first withdrawal to an address at or above this goes to review.
    new_address_review_amount: int = Field(default=0, ge=0)


class WithdrawSettings(KitSettings):
    """Settings of the withdraw service (FINMESH_* variables)."""

    # Asset id -> policy (FINMESH_WITHDRAWAL_ASSETS as JSON; not FINMESH_ASSETS, which the account
    # service reads in another shape).
    withdrawal_assets: dict[str, AssetPolicy] = Field(default_factory=dict)
    # Chain -> custody hot wallet id paying that chain's withdrawals.
    hot_wallets: dict[str, str] = Field(default_factory=dict)
    # Chain -> EIP-155 chain id (bound into the approvals custody verifies).
    chain_ids: dict[str, int] = Field(default_factory=dict)
    # Highest fee per gas (wei) an approval allows, originals and replacements alike.
    fee_cap_per_gas: int = Field(default=500 * 10**9, gt=0)
    # Distinct approvers needed above the auto-approval threshold, and how long they have.
    required_approvals: int = Field(default=2, ge=1, le=10)
    approval_window_s: int = Field(default=24 * 3600, gt=0)
    # A new whitelist address is usable after this many seconds.
    address_cool_down_s: float = Field(default=24 * 3600.0, ge=0)
    # Built-in velocity rule: more than this many withdrawals in velocity_window_s go to review.
    velocity_max: int = Field(default=5, ge=1)
    velocity_window_s: int = Field(default=3600, gt=0)
    # Key id custody knows the issuer key by, and the Ed25519 private key (32 raw bytes as
    # base64) or a file holding it.
    approval_key_id: str = "withdraw"
    approval_private_key: SecretStr = SecretStr("")
    approval_private_key_file: Path | None = None
    approval_lifetime_s: int = Field(default=600, gt=0, le=3600)
    # Ledger codes; `{asset}` is the asset id (`ethereum:ETH`).
    custody_account_code: str = "assets:custody:hot:{asset}"
    fee_revenue_account_code: str = "revenue:fees:withdrawal:{asset}"
    gas_expense_account_code: str = "expenses:gas:withdrawal:{asset}"
    # The kyc service gives KYC levels and screens addresses against its sanctions list; without
    # it (the custodial-wallet profile may leave it out) every user has L0 limits.
    kyc_enabled: bool = False
    # Execution: how often the worker runs, when a pending transaction counts as stuck, and how
    # many replacements (same nonce, higher fee) the policy allows.
    execution_enabled: bool = True
    execution_interval_s: float = Field(default=2.0, gt=0)
    stuck_timeout_s: float = Field(default=600.0, gt=0)
    replacements_max: int = Field(default=1, ge=0, le=10)

    @model_validator(mode="after")
    def _one_key_source(self) -> WithdrawSettings:
        if self.approval_private_key.get_secret_value() and self.approval_private_key_file:
            raise ValueError("set approval_private_key or approval_private_key_file, not both")
        for asset in self.withdrawal_assets:
            if ":" not in asset:
                raise ValueError(f"asset {asset!r} is not <chain>:<symbol>")
        return self

    def chain_of(self, asset: str) -> str:
        return asset.split(":", 1)[0]
