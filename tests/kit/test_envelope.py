"""Envelope encryption: a fresh data key per blob, wrapped by the master key, bound to its record."""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest

from svc.kit.envelope import Envelope, SealingWrapper
from svc.kit.sealing import FileKeyProvider, SealingError, StaticKeyProvider


def test_seal_and_open_with_a_file_master_key(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "master.key"
    envelope = Envelope(SealingWrapper(FileKeyProvider(path)))
    assert path.stat().st_mode & 0o777 == 0o600
    secret = secrets.token_bytes(32)
    first = envelope.seal(secret, aad=b"record-1")
    second = envelope.seal(secret, aad=b"record-1")
    assert first != second and secret not in first  # a fresh data key and nonce each time
    assert envelope.open(first, aad=b"record-1") == secret
    reopened = Envelope(SealingWrapper(FileKeyProvider(path)))
    assert reopened.open(second, aad=b"record-1") == secret
    assert envelope.master_key_id == reopened.master_key_id


def test_a_blob_opens_only_for_its_record_and_untampered(tmp_path: Path) -> None:
    envelope = Envelope(SealingWrapper(FileKeyProvider(tmp_path / "master.key")))
    blob = envelope.seal(b"seed", aad=b"custody:root-1")
    with pytest.raises(SealingError):
        envelope.open(blob, aad=b"custody:root-2")
    for position in (len(blob) - 1, len(blob) // 2, 3):
        tampered = bytearray(blob)
        tampered[position] ^= 0x01
        with pytest.raises(SealingError):
            envelope.open(bytes(tampered), aad=b"custody:root-1")
    with pytest.raises(SealingError):
        envelope.open(blob[:20], aad=b"custody:root-1")
    with pytest.raises(SealingError):
        envelope.open(b"\x02" + blob[1:], aad=b"custody:root-1")
    stranger = Envelope(SealingWrapper(FileKeyProvider(tmp_path / "other.key")))
    with pytest.raises(SealingError):
        stranger.open(blob, aad=b"custody:root-1")


def test_master_keys_rotate_and_old_blobs_still_open() -> None:
    old, new = secrets.token_bytes(32), secrets.token_bytes(32)
    before = Envelope(SealingWrapper(StaticKeyProvider({"old": old})))
    blob = before.seal(b"key material", aad=b"k")
    after = Envelope(SealingWrapper(StaticKeyProvider({"new": new, "old": old}, current="new")))
    assert after.master_key_id == "new"
    assert after.open(blob, aad=b"k") == b"key material"
    assert after.open(after.seal(b"more", aad=b"k"), aad=b"k") == b"more"
    retired = Envelope(SealingWrapper(StaticKeyProvider({"new": new})))
    with pytest.raises(SealingError):
        retired.open(blob, aad=b"k")
