"""Where KYC document content lives: the kit's object stores (svc/kit/objects.py), chosen by
configuration. Content reaches the store already sealed (AES-256-GCM, bound to the document
id), so a store never sees plaintext."""

from __future__ import annotations

from svc.kit.objects import LocalObjectStore, ObjectStore, S3ObjectStore
from svc.kyc.config import KycSettings

__all__ = ["ObjectStore", "document_store"]


def document_store(settings: KycSettings) -> ObjectStore:
    """The configured store: files under a directory, or a bucket through the S3 API."""
    if settings.document_store == "local":
        return LocalObjectStore(settings.documents_path)
    assert settings.document_s3_bucket, "the settings' validator requires a bucket for an S3 store"
    return S3ObjectStore(
        bucket=settings.document_s3_bucket,
        prefix=settings.document_s3_prefix,
        endpoint_url=settings.document_s3_endpoint_url,
        region=settings.document_s3_region,
        access_key_id=settings.document_s3_access_key_id,
        secret_access_key=(
            settings.document_s3_secret_access_key.get_secret_value()
            if settings.document_s3_secret_access_key
            else None
        ),
    )
