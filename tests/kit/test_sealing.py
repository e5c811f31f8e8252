"""AES-256-GCM sealing under a key provider: round trip, binding to the record, key rotation."""

from __future__ import annotations

import base64
import secrets
import stat
from pathlib import Path

import pytest

from svc.kit.sealing import FileKeyProvider, Sealer, SealingError, StaticKeyProvider, key_id_of


def test_round_trip_and_binding_to_associated_data() -> None:
    sealer = Sealer(StaticKeyProvider.from_base64(base64.b64encode(secrets.token_bytes(32)).decode()))
    blob = sealer.seal(b"secret", aad=b"row-1")
    assert b"secret" not in blob
    assert sealer.open(blob, aad=b"row-1") == b"secret"
    with pytest.raises(SealingError):
        sealer.open(blob, aad=b"row-2")
    tampered = blob[:-1] + bytes([blob[-1] ^ 1])
    with pytest.raises(SealingError):
        sealer.open(tampered, aad=b"row-1")
    with pytest.raises(SealingError):
        sealer.open(b"\x07garbage", aad=b"row-1")


def test_rotation_keeps_old_blobs_readable() -> None:
    old, new = secrets.token_bytes(32), secrets.token_bytes(32)
    before = Sealer(StaticKeyProvider({key_id_of(old): old})).seal(b"a", aad=b"")
    rotated = Sealer(StaticKeyProvider({key_id_of(new): new, key_id_of(old): old}))
    assert rotated.open(before, aad=b"") == b"a"
    with pytest.raises(SealingError):
        Sealer(StaticKeyProvider({key_id_of(new): new})).open(before, aad=b"")


def test_file_provider_creates_a_private_key_once(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "master.key"
    blob = Sealer(FileKeyProvider(path)).seal(b"x", aad=b"")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert Sealer(FileKeyProvider(path)).open(blob, aad=b"") == b"x"


def test_keys_must_be_256_bits() -> None:
    with pytest.raises(ValueError):
        StaticKeyProvider({"short": b"0" * 16})
