"""The deposit service's settings: the kit's, plus how often the credit round runs, and the sweeps:
the hot wallet of each chain, the approval key custody trusts, the ledger accounts and the schedule."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr, model_validator

from svc.kit.config import KitSettings


class DepositSettings(KitSettings):
    """Settings of the deposit service (FINMESH_* variables)."""

    # The round that credits deposits whose asset needs more confirmations than the chain's depth
    # (the chain gateway reports only the chain's), and retries credits a peer refused for a while.
    credit_interval_s: float = Field(default=2.0, gt=0)
    # How long the chain's follower status (head, depth) is reused for reads and the round.
    chain_status_ttl_s: float = Field(default=1.0, ge=0)
    # Chain -> custody HOT wallet id that sweeps go to and gas top-ups come from.
    hot_wallets: dict[str, str] = Field(default_factory=dict)
    # Key id custody knows the issuer key by (purposes DEPOSIT_SWEEP and GAS_TOP_UP), and the
    # Ed25519 private key (32 raw bytes as base64) or a file holding it; none: no sweep runs.
    approval_key_id: str = "deposit"
    approval_private_key: SecretStr = SecretStr("")
    approval_private_key_file: Path | None = None
    approval_lifetime_s: int = Field(default=600, gt=0, le=3600)
    # Highest fee per gas (wei) a sweep or top-up approval allows.
    fee_cap_per_gas: int = Field(default=500 * 10**9, gt=0)
    # Ledger codes; `{asset}` is the asset id. The same accounts as the withdraw service's, so
    # the books have one hot-wallet account and one gas expense account per asset.
    hot_account_code: str = "assets:custody:hot:{asset}"
    gas_expense_account_code: str = "expenses:gas:withdrawal:{asset}"
    # How often unfinished sweeps are moved on (also resumed after a restart).
    sweep_interval_s: float = Field(default=2.0, gt=0)
    # A scheduled sweep of every asset with deposit settings, this often; off by default.
    scheduled_sweeps_enabled: bool = False
    scheduled_sweep_interval_s: float = Field(default=3600.0, gt=0)

    @model_validator(mode="after")
    def _one_key_source(self) -> DepositSettings:
        if self.approval_private_key.get_secret_value() and self.approval_private_key_file:
            raise ValueError("set approval_private_key or approval_private_key_file, not both")
        return self
