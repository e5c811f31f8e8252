"""KYC documents in an S3-compatible bucket (S3Proxy, Signature V4): what an applicant uploads
is read back by the operator through the contract, and the bucket only ever holds sealed bytes."""

from __future__ import annotations

import secrets
import uuid
from pathlib import Path

import boto3
import pytest
from botocore.config import Config
from finmesh.kyc.v1 import kyc_service_pb2 as service
from pydantic import ValidationError

from svc.kyc.config import KycSettings
from tests.harness.servers import S3Server
from tests.kyc.conftest import JPEG, SELFIE, _stop, start_kyc


def _client(server: S3Server):  # type: ignore[no-untyped-def]
    return boto3.session.Session().client(
        "s3",
        endpoint_url=server.endpoint_url,
        region_name=server.region,
        aws_access_key_id=server.access_key,
        aws_secret_access_key=server.secret_key,
        # As the store does: S3Proxy serves no flexible checksums (see svc/kit/objects.py).
        config=Config(
            request_checksum_calculation="when_required", response_checksum_validation="when_required"
        ),
    )


async def test_documents_live_sealed_in_the_bucket(
    database_url: str, tmp_path: Path, s3_server: S3Server
) -> None:
    bucket = f"kyc-{secrets.token_hex(6)}"
    s3 = _client(s3_server)
    s3.create_bucket(Bucket=bucket)
    kyc = await start_kyc(
        database_url,
        tmp_path,
        document_store="s3",
        document_s3_bucket=bucket,
        document_s3_prefix="kyc-documents",
        document_s3_endpoint_url=s3_server.endpoint_url,
        document_s3_region=s3_server.region,
        document_s3_access_key_id=s3_server.access_key,
        document_s3_secret_access_key=s3_server.secret_key,
    )
    try:
        applicant, maker = str(uuid.uuid4()), str(uuid.uuid4())
        submitted = await kyc.apply(applicant, level=2)
        review = await kyc.stub.GetSubmissionForReview(
            service.GetSubmissionForReviewRequest(submission_id=submitted.submission_id),
            metadata=kyc.user(maker, "operator"),
        )
        contents = []
        for document in review.submission.documents:
            answer = await kyc.stub.GetDocumentContent(
                service.GetDocumentContentRequest(document_id=document.document_id),
                metadata=kyc.user(maker, "operator"),
            )
            contents.append(answer.data)
        assert sorted(contents) == sorted([JPEG, SELFIE])
        listed = s3.list_objects_v2(Bucket=bucket)["Contents"]
        assert len(listed) == 2 and all(item["Key"].startswith("kyc-documents/") for item in listed)
        assert not kyc.documents_dir.exists()  # nothing went to the local directory
        for item in listed:
            stored = s3.get_object(Bucket=bucket, Key=item["Key"])["Body"].read()
            assert b"Mustermann" not in stored  # sealed (AES-256-GCM) before it left the service
    finally:
        await _stop(kyc)


def test_an_s3_store_without_a_bucket_is_refused_at_start() -> None:
    with pytest.raises(ValidationError, match="FINMESH_DOCUMENT_S3_BUCKET"):
        KycSettings(document_store="s3")
