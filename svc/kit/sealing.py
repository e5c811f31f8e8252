"""Encryption of sensitive data at rest: AES-256-GCM under a key from a key provider.

A service seals what it must be able to read back (token-signing private keys, API-key
secrets, TOTP seeds, personal data) and stores only the sealed blob:

    sealer = Sealer(provider)
    blob = sealer.seal(secret, aad=b"auth.api_key:" + key_id.encode())
    secret = sealer.open(blob, aad=b"auth.api_key:" + key_id.encode())

The associated data binds a blob to the record it belongs to, so a blob copied into another
row does not open. Each blob names the provider key that sealed it, so the provider can rotate
to a new key and still open older blobs. In production the provider is a KMS or HSM holding
the key-encryption key; `FileKeyProvider` is the embedded default (a 256-bit key in a file
under the service's data directory, created on first use with mode 0600), `StaticKeyProvider`
takes keys from configuration.
"""

from __future__ import annotations

import base64
import hashlib
import os
import secrets
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

KEY_BYTES = 32
NONCE_BYTES = 12
BLOB_VERSION = 1
KEY_ID_BYTES_MAX = 255


class SealingError(ValueError):
    """A blob does not open: wrong key, wrong associated data, tampered or not a sealed blob."""


class KeyProvider(Protocol):
    """Holds the 256-bit key-encryption keys, by id; one of them seals new blobs."""

    def current_key_id(self) -> str:
        """Id of the key that seals new blobs."""
        ...

    def key(self, key_id: str) -> bytes:
        """The 32-byte key of an id; raises SealingError for an unknown id."""
        ...


def key_id_of(key: bytes) -> str:
    """A stable, non-secret id of a key: a prefix of the SHA-256 of its SHA-256."""
    return "k" + hashlib.sha256(hashlib.sha256(key).digest()).hexdigest()[:15]


class StaticKeyProvider:
    """Keys given in configuration; the first one (or `current`) seals."""

    def __init__(self, keys: Mapping[str, bytes], current: str = "") -> None:
        if not keys:
            raise ValueError("a key provider needs at least one key")
        for key_id, key in keys.items():
            if len(key) != KEY_BYTES:
                raise ValueError(f"key {key_id!r} has {len(key)} bytes, AES-256 needs {KEY_BYTES}")
        self._keys = dict(keys)
        self._current = current or next(iter(self._keys))
        if self._current not in self._keys:
            raise ValueError(f"current key {self._current!r} is not among the keys")

    @classmethod
    def from_base64(cls, *encoded: str) -> StaticKeyProvider:
        """Keys as base64 text (the first seals); ids derived from the keys."""
        keys = [base64.b64decode(text, validate=True) for text in encoded]
        return cls({key_id_of(key): key for key in keys})

    def current_key_id(self) -> str:
        return self._current

    def key(self, key_id: str) -> bytes:
        try:
            return self._keys[key_id]
        except KeyError:
            raise SealingError(f"unknown key {key_id!r}") from None


class FileKeyProvider(StaticKeyProvider):
    """One key in a file (base64), created with mode 0600 when missing: the embedded default."""

    def __init__(self, path: Path) -> None:
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            encoded = base64.b64encode(secrets.token_bytes(KEY_BYTES))
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(descriptor, "wb") as handle:
                handle.write(encoded + b"\n")
        key = base64.b64decode(path.read_bytes().strip(), validate=True)
        super().__init__({key_id_of(key): key})


def configured_provider(keys: Sequence[str], fallback_file: Path) -> KeyProvider:
    """The keys of a service's configuration (base64, the first seals), or without any the
    embedded default: one key in `fallback_file`, created on first use."""
    return StaticKeyProvider.from_base64(*keys) if keys else FileKeyProvider(fallback_file)


class Sealer:
    """Seals and opens blobs with AES-256-GCM under the provider's keys."""

    def __init__(self, provider: KeyProvider) -> None:
        self._provider = provider

    def seal(self, plaintext: bytes, *, aad: bytes) -> bytes:
        """version (1 byte) | key id length (1) | key id | nonce (12) | ciphertext with tag."""
        key_id = self._provider.current_key_id().encode()
        assert 0 < len(key_id) <= KEY_ID_BYTES_MAX, key_id
        nonce = secrets.token_bytes(NONCE_BYTES)
        sealed = AESGCM(self._provider.key(key_id.decode())).encrypt(nonce, plaintext, aad)
        return bytes([BLOB_VERSION, len(key_id)]) + key_id + nonce + sealed

    def open(self, blob: bytes, *, aad: bytes) -> bytes:
        """The plaintext of a blob sealed with the same associated data; SealingError otherwise."""
        if len(blob) < 2 or blob[0] != BLOB_VERSION:
            raise SealingError("not a sealed blob")
        key_end = 2 + blob[1]
        key_id = blob[2:key_end].decode(errors="replace")
        nonce, sealed = blob[key_end : key_end + NONCE_BYTES], blob[key_end + NONCE_BYTES :]
        if len(nonce) != NONCE_BYTES or not sealed:
            raise SealingError("truncated sealed blob")
        try:
            return AESGCM(self._provider.key(key_id)).decrypt(nonce, sealed, aad)
        except InvalidTag:
            raise SealingError("sealed blob does not open: tampered, or other key or record") from None
