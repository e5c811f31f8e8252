"""Object storage by key: the interface, the local filesystem store (the embedded default) and an
S3-compatible store (production: AWS S3, or any endpoint that speaks the S3 API).

Callers hand over bytes that are already sealed where they are sensitive (AES-256-GCM, see
sealing.py): a store never needs to see plaintext. Both stores refuse keys outside KEY, so that a
key can never climb out of its directory or bucket prefix.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import re
import secrets
from pathlib import Path
from typing import Any, Protocol

KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,511}$")


class ObjectStore(Protocol):
    """Where object content lives, by key."""

    async def put(self, key: str, data: bytes) -> None:
        """Stores `data` under `key` durably before returning; replaces an earlier object."""
        ...

    async def get(self, key: str) -> bytes:
        """The object's bytes; FileNotFoundError if there is none."""
        ...

    async def delete(self, key: str) -> None:
        """Erases the object; no error if it is already gone."""
        ...


def checked_key(key: str) -> str:
    """`key` if it is a valid object key; ValueError otherwise."""
    if not KEY.match(key) or ".." in key.split("/"):
        raise ValueError(f"not an object key: {key!r}")
    return key


class LocalObjectStore:
    """Objects as files under one directory; written to a temporary name, fsynced, then renamed,
    so a crash never leaves a half-written object under its key."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, key: str) -> Path:
        return self.root / checked_key(key)

    async def put(self, key: str, data: bytes) -> None:
        await asyncio.to_thread(self._put, self._path(key), data)

    async def get(self, key: str) -> bytes:
        return await asyncio.to_thread(self._path(key).read_bytes)

    async def delete(self, key: str) -> None:
        await asyncio.to_thread(self._path(key).unlink, missing_ok=True)

    @staticmethod
    def _put(path: Path, data: bytes) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)


class ObjectIntegrityError(Exception):
    """The object read back is not the one written (its SHA-256 differs from the one stored)."""


class S3ObjectStore:
    """Objects in one bucket under a key prefix, through the S3 API (boto3, in worker threads).

    Every object is written with its SHA-256 as user metadata and its MD5 as Content-MD5, so the
    endpoint refuses a body damaged in transit and a read checks the bytes it got against the
    digest written with them. Path-style addressing works with S3 itself and with the
    S3-compatible servers (S3Proxy, Ceph, MinIO) that serve buckets under one host name.
    """

    DIGEST_METADATA = "sha256"

    def __init__(
        self,
        *,
        bucket: str,
        prefix: str = "",
        endpoint_url: str | None = None,
        region: str = "us-east-1",
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        timeout_s: float = 10.0,
    ) -> None:
        import boto3  # imported here: only deployments with an S3 store pay for importing boto3
        from botocore.config import Config

        if prefix and not prefix.endswith("/"):
            prefix += "/"
        self.bucket = bucket
        self.prefix = prefix
        self._client: Any = boto3.session.Session().client(
            "s3",
            endpoint_url=endpoint_url,
            region_name=region,
            aws_access_key_id=access_key_id,
            aws_secret_access_key=secret_access_key,
            config=Config(
                s3={"addressing_style": "path"},
                connect_timeout=timeout_s,
                read_timeout=timeout_s,
                retries={"max_attempts": 3, "mode": "standard"},
                # Content-MD5 and the SHA-256 metadata protect the body; the flexible CRC
                # checksums newer SDKs add by default are not served by every S3-compatible store.
                request_checksum_calculation="when_required",
                response_checksum_validation="when_required",
            ),
        )

    def _key(self, key: str) -> str:
        return self.prefix + checked_key(key)

    async def ensure_bucket(self) -> None:
        """Creates the bucket if it does not exist (deployments usually provision it)."""
        await asyncio.to_thread(self._ensure_bucket)

    async def put(self, key: str, data: bytes) -> None:
        await asyncio.to_thread(self._put, self._key(key), data)

    async def get(self, key: str) -> bytes:
        return await asyncio.to_thread(self._get, self._key(key))

    async def delete(self, key: str) -> None:
        await asyncio.to_thread(self._client.delete_object, Bucket=self.bucket, Key=self._key(key))

    def _ensure_bucket(self) -> None:
        from botocore.exceptions import ClientError

        try:
            self._client.head_bucket(Bucket=self.bucket)
        except ClientError as failure:
            if failure.response.get("Error", {}).get("Code") not in ("404", "NoSuchBucket"):
                raise
            self._client.create_bucket(Bucket=self.bucket)

    def _put(self, key: str, data: bytes) -> None:
        self._client.put_object(
            Bucket=self.bucket,
            Key=key,
            Body=data,
            ContentMD5=base64.b64encode(hashlib.md5(data, usedforsecurity=False).digest()).decode(),
            ContentType="application/octet-stream",
            Metadata={self.DIGEST_METADATA: hashlib.sha256(data).hexdigest()},
        )

    def _get(self, key: str) -> bytes:
        from botocore.exceptions import ClientError

        try:
            answer = self._client.get_object(Bucket=self.bucket, Key=key)
        except ClientError as failure:
            if failure.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                raise FileNotFoundError(key) from failure
            raise
        data: bytes = answer["Body"].read()
        expected = answer.get("Metadata", {}).get(self.DIGEST_METADATA)
        if expected is not None and hashlib.sha256(data).hexdigest() != expected:
            raise ObjectIntegrityError(f"{key}: content does not match its SHA-256")
        return data
