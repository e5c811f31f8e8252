"""The custody service's settings: the kit's, plus the key backend, the trusted approval issuers,
the chains' assets and the approval limits."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, Field, SecretStr, field_validator

from svc.kit.config import KitSettings

MASTER_KEY_FILE_NAME = "custody-master.key"
APPROVAL_LIFETIME_MAX_S = 3600
MOVEMENT_APPROVAL_WINDOW_S = 24 * 3600


class IssuerSettings(BaseModel):
    """A key that signs approvals: who holds it and what it may approve."""

    # Issuing service named in the claims (`withdraw`, `deposit`).
    issuer: str = Field(min_length=1, max_length=32)
    # Ed25519 public key, 32 bytes as base64.
    public_key: str
    # ApprovalPurpose values this key may approve (1 withdrawal, 2 deposit sweep, 3 gas top-up).
    purposes: list[int] = Field(min_length=1)

    @field_validator("purposes")
    @classmethod
    def _known_purposes(cls, purposes: list[int]) -> list[int]:
        unknown = sorted(set(purposes) - {1, 2, 3})
        if unknown:
            raise ValueError(f"unknown approval purposes {unknown}")
        return purposes


class ChainAssets(BaseModel):
    """What custody must know of a chain to read a transaction's payment."""

    chain_id: int = Field(gt=0)
    # Asset id of the native coin (`ethereum:ETH`).
    native_asset: str
    # ERC-20 contracts custody signs transfers of: address (any case) -> asset id.
    tokens: dict[str, str] = Field(default_factory=dict)


DEFAULT_CHAINS = {
    "ethereum": ChainAssets(
        chain_id=1,
        native_asset="ethereum:ETH",
        tokens={
            "0xA0b86991c6218b36c1d19D4a2e9Eb0cE3606eB48": "ethereum:USDC",
            "0xdAC17F958D13D2ee523a2206206994597C13D831": "ethereum:USDT",
        },
    ),
    "bsc": ChainAssets(chain_id=56, native_asset="bsc:BNB"),
    "polygon": ChainAssets(chain_id=137, native_asset="polygon:POL"),
    "arbitrum": ChainAssets(chain_id=42161, native_asset="arbitrum:ETH"),
    "hardhat": ChainAssets(chain_id=31337, native_asset="hardhat:ETH"),
}


class CustodySettings(KitSettings):
    """Settings of the custody service (FINMESH_* variables)."""

    # PKCS#11 module of the HSM (/usr/lib/softhsm/libsofthsm2.so, a cloud HSM's client library);
    # empty: no HSM, keys are software keys in envelopes (the embedded default).
    hsm_module: str = ""
    hsm_token_label: str = ""
    hsm_pin: SecretStr = SecretStr("")
    # Label of the AES-256 key inside the token that wraps envelope data keys (deposit-root seeds).
    hsm_master_key_label: str = "finmesh-custody-master"
    # Without an HSM: the file holding the envelopes' master key (created on first start);
    # empty means <data_dir>/custody-master.key.
    master_key_file: Path | None = None
    # Approval-signing keys custody trusts, by key id.
    approval_issuers: dict[str, IssuerSettings] = Field(default_factory=dict)
    approval_lifetime_max_s: int = Field(default=APPROVAL_LIFETIME_MAX_S, gt=0, le=APPROVAL_LIFETIME_MAX_S)
    movement_approval_window_s: int = Field(default=MOVEMENT_APPROVAL_WINDOW_S, gt=0)
    chains: dict[str, ChainAssets] = Field(default_factory=lambda: dict(DEFAULT_CHAINS))
    # How often hot-wallet balances are read and the policies evaluated.
    rebalance_interval_s: float = Field(default=60.0, gt=0)
    # How often approved movements are sent, broadcast ones followed and new wallets registered
    # with the chain gateway's watch list.
    movement_interval_s: float = Field(default=2.0, gt=0)

    @property
    def master_key_path(self) -> Path:
        return self.master_key_file or self.data_dir / MASTER_KEY_FILE_NAME

    @property
    def hsm_configured(self) -> bool:
        return bool(self.hsm_module)
