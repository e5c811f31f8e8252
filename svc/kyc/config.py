"""The KYC service's settings: the kit's, plus where documents and keys live, the sanctions list
file, the screening thresholds and the AML model's country list."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator

from svc.kit.config import KitSettings

# FATF "black and grey list" style default; deployments set FINMESH_HIGH_RISK_COUNTRIES as JSON.
DEFAULT_HIGH_RISK_COUNTRIES = ("IR", "KP", "MM", "SY", "YE", "AF", "RU", "BY")


class KycSettings(KitSettings):
    """Settings of the KYC service (FINMESH_* variables)."""

    # "local": documents as files under document_store_dir (the embedded default); "s3": objects
    # in document_s3_bucket through the S3 API (AWS S3, or an S3-compatible endpoint).
    document_store: Literal["local", "s3"] = "local"
    # Empty means <data_dir>/kyc-documents.
    document_store_dir: Path | None = None
    document_s3_bucket: str = Field(default="", pattern=r"^([a-z0-9][a-z0-9.-]{1,61}[a-z0-9])?$")
    document_s3_prefix: str = Field(default="kyc-documents", pattern=r"^[A-Za-z0-9._/-]{0,200}$")
    # Empty means AWS S3 itself; set for an S3-compatible endpoint.
    document_s3_endpoint_url: str | None = None
    document_s3_region: str = "us-east-1"
    # Unset means the SDK's own credential chain (on EKS: the pod's IAM role).
    document_s3_access_key_id: str | None = None
    document_s3_secret_access_key: SecretStr | None = None
    # Base64 AES-256 keys sealing personal data and documents, the first seals new data; empty
    # means one key in <data_dir>/kyc-data.key, created on first start (development only).
    data_keys: tuple[str, ...] = ()
    # The sanctions list file of the deployment (the contract's CSV layout, or JSON when it ends
    # in .json): each new content becomes the ACTIVE version of its source (svc/kyc/registry.py).
    # Optional when operators import and activate versions through the contract; with no ACTIVE
    # version at all, every screening is refused.
    sanctions_list_file: Path | None = None
    # Source the file is recorded as (finmesh.kyc.v1.SanctionsListSource); 5 is INTERNAL.
    sanctions_list_source: int = Field(default=5, ge=1, le=5)
    sanctions_reload_interval_s: float = Field(default=5.0, gt=0, le=3600)
    # A name scoring at least this is a potential match (REVIEW) ...
    name_match_threshold: str = Field(default="0.85", pattern=r"^(0\.[5-9][0-9]{0,3}|1(\.0{1,4})?)$")
    # ... and at least this, a likely one (DENY).
    name_deny_threshold: str = Field(default="0.95", pattern=r"^(0\.[5-9][0-9]{0,3}|1(\.0{1,4})?)$")
    high_risk_countries: tuple[str, ...] = DEFAULT_HIGH_RISK_COUNTRIES

    @model_validator(mode="after")
    def _s3_store_has_a_bucket(self) -> KycSettings:
        if self.document_store == "s3" and not self.document_s3_bucket:
            raise ValueError("FINMESH_DOCUMENT_S3_BUCKET is required when FINMESH_DOCUMENT_STORE is s3")
        return self

    @property
    def documents_path(self) -> Path:
        return self.document_store_dir or self.data_dir / "kyc-documents"

    @property
    def data_key_path(self) -> Path:
        return self.data_dir / "kyc-data.key"
