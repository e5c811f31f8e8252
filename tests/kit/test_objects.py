"""The object stores against real storage: the local filesystem store, and the S3 store against
an S3-compatible endpoint (S3Proxy, authenticated with Signature V4)."""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest
from botocore.exceptions import ClientError

from svc.kit.objects import LocalObjectStore, ObjectIntegrityError, ObjectStore, S3ObjectStore
from tests.harness.servers import S3Server


def _s3(server: S3Server, bucket: str, *, secret: str | None = None) -> S3ObjectStore:
    return S3ObjectStore(
        bucket=bucket,
        prefix="documents",
        endpoint_url=server.endpoint_url,
        region=server.region,
        access_key_id=server.access_key,
        secret_access_key=secret or server.secret_key,
    )


@pytest.fixture(params=["local", "s3"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> ObjectStore:
    if request.param == "local":
        return LocalObjectStore(tmp_path / "objects")
    server: S3Server = request.getfixturevalue("s3_server")
    s3 = _s3(server, f"finmesh-{secrets.token_hex(6)}")
    await s3.ensure_bucket()
    return s3


async def test_an_object_is_read_back_replaced_and_erased(store: ObjectStore) -> None:
    content = secrets.token_bytes(70_000)
    await store.put("user-1/doc-1", content)
    assert await store.get("user-1/doc-1") == content
    await store.put("user-1/doc-1", b"replacement")
    assert await store.get("user-1/doc-1") == b"replacement"
    await store.delete("user-1/doc-1")
    with pytest.raises(FileNotFoundError):
        await store.get("user-1/doc-1")
    await store.delete("user-1/doc-1")  # already gone: no error


async def test_a_missing_object_is_not_found(store: ObjectStore) -> None:
    with pytest.raises(FileNotFoundError):
        await store.get("never/written")


@pytest.mark.parametrize("key", ["../escape", "a/../../b", "/absolute", "", "a" * 600, "white space"])
async def test_keys_outside_the_key_space_are_refused(store: ObjectStore, key: str) -> None:
    with pytest.raises(ValueError):
        await store.put(key, b"x")


async def test_the_s3_store_keeps_objects_under_its_prefix(s3_server: S3Server) -> None:
    bucket = f"finmesh-{secrets.token_hex(6)}"
    store = _s3(s3_server, bucket)
    await store.ensure_bucket()
    await store.ensure_bucket()  # an existing bucket is kept
    await store.put("user-2/doc", b"sealed bytes")
    listed = store._client.list_objects_v2(Bucket=bucket)
    assert [item["Key"] for item in listed["Contents"]] == ["documents/user-2/doc"]


async def test_a_damaged_object_is_refused_on_read(s3_server: S3Server) -> None:
    bucket = f"finmesh-{secrets.token_hex(6)}"
    store = _s3(s3_server, bucket)
    await store.ensure_bucket()
    await store.put("user-3/doc", b"original")
    # Someone with bucket access rewrites the bytes but keeps the metadata of the original.
    head = store._client.head_object(Bucket=bucket, Key="documents/user-3/doc")
    store._client.put_object(
        Bucket=bucket, Key="documents/user-3/doc", Body=b"tampered", Metadata=head["Metadata"]
    )
    with pytest.raises(ObjectIntegrityError):
        await store.get("user-3/doc")


async def test_a_wrong_secret_is_refused_by_the_endpoint(s3_server: S3Server) -> None:
    store = _s3(s3_server, f"finmesh-{secrets.token_hex(6)}", secret="not-the-secret")
    with pytest.raises(ClientError) as refused:
        await store.ensure_bucket()
    assert refused.value.response["Error"]["Code"] in ("403", "SignatureDoesNotMatch", "AccessDenied")
