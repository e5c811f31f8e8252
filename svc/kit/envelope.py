"""Envelope encryption: each blob under its own data key, the data key wrapped by a master key.

    envelope = Envelope(SealingWrapper(FileKeyProvider(path)))   # master key in a file
    blob = envelope.seal(secret, aad=b"custody.key:" + key_id.encode())
    secret = envelope.open(blob, aad=b"custody.key:" + key_id.encode())

`sealing.Sealer` encrypts directly under a key the provider hands out, which needs a provider
that can export its key. A KMS or an HSM never does: it only wraps and unwraps data keys inside
itself. `KeyWrapper` is that narrower interface: `SealingWrapper` implements it over any
`sealing.KeyProvider` (file or configured keys), and an HSM- or KMS-backed wrapper implements it
with the master key staying inside the device. The plaintext is encrypted with AES-256-GCM under a
fresh 256-bit data key; only the wrapped data key is stored, next to the ciphertext, with the id of
the master key that wrapped it so that master keys can rotate.
"""

from __future__ import annotations

import secrets
from typing import Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from svc.kit.sealing import KEY_ID_BYTES_MAX, NONCE_BYTES, KeyProvider, Sealer, SealingError

DATA_KEY_BYTES = 32
ENVELOPE_VERSION = 1
WRAPPED_KEY_BYTES_MAX = 65_535
WRAP_AAD_PREFIX = b"finmesh.envelope.data-key:"


class KeyWrapper(Protocol):
    """Wraps and unwraps data keys under master keys that it never hands out."""

    def current_key_id(self) -> str:
        """Id of the master key that wraps new data keys (non-secret, stored in each blob)."""
        ...

    def wrap(self, key_id: str, data_key: bytes, aad: bytes) -> bytes:
        """The data key encrypted under master key `key_id`, bound to `aad`."""
        ...

    def unwrap(self, key_id: str, wrapped: bytes, aad: bytes) -> bytes:
        """The data key of `wrapped`; raises SealingError when it does not open."""
        ...


class SealingWrapper:
    """A KeyWrapper over a kit KeyProvider: data keys sealed with AES-256-GCM under its keys."""

    def __init__(self, provider: KeyProvider) -> None:
        self._provider = provider
        self._sealer = Sealer(provider)

    def current_key_id(self) -> str:
        return self._provider.current_key_id()

    def wrap(self, key_id: str, data_key: bytes, aad: bytes) -> bytes:
        if key_id != self._provider.current_key_id():
            raise SealingError(f"key {key_id!r} is not the provider's current key")
        return self._sealer.seal(data_key, aad=aad)

    def unwrap(self, key_id: str, wrapped: bytes, aad: bytes) -> bytes:
        return self._sealer.open(wrapped, aad=aad)


def _wrap_aad(key_id: str, aad: bytes) -> bytes:
    # The master key id in a blob's header is not encrypted; binding it into the wrapping's
    # associated data makes a header naming another key fail to open.
    return WRAP_AAD_PREFIX + key_id.encode() + b"\0" + aad


class Envelope:
    """Seals and opens blobs: AES-256-GCM under a fresh data key wrapped by the master key."""

    def __init__(self, wrapper: KeyWrapper) -> None:
        self._wrapper = wrapper

    @property
    def master_key_id(self) -> str:
        """Id of the master key that wraps new blobs' data keys."""
        return self._wrapper.current_key_id()

    def seal(self, plaintext: bytes, *, aad: bytes) -> bytes:
        """version (1) | key id length (1) | key id | wrapped length (2) | wrapped | nonce (12) | sealed."""
        key_id = self._wrapper.current_key_id()
        encoded_id = key_id.encode()
        assert 0 < len(encoded_id) <= KEY_ID_BYTES_MAX, key_id
        data_key = secrets.token_bytes(DATA_KEY_BYTES)
        wrapped = self._wrapper.wrap(key_id, data_key, _wrap_aad(key_id, aad))
        assert 0 < len(wrapped) <= WRAPPED_KEY_BYTES_MAX, len(wrapped)
        nonce = secrets.token_bytes(NONCE_BYTES)
        ciphertext = AESGCM(data_key).encrypt(nonce, plaintext, aad)
        return (
            bytes([ENVELOPE_VERSION, len(encoded_id)])
            + encoded_id
            + len(wrapped).to_bytes(2, "big")
            + wrapped
            + nonce
            + ciphertext
        )

    def open(self, blob: bytes, *, aad: bytes) -> bytes:
        """The plaintext of a blob sealed with the same associated data; SealingError otherwise."""
        if len(blob) < 2 or blob[0] != ENVELOPE_VERSION:
            raise SealingError("not an envelope")
        id_end = 2 + blob[1]
        key_id = blob[2:id_end].decode(errors="replace")
        wrapped_length = int.from_bytes(blob[id_end : id_end + 2], "big")
        wrapped_end = id_end + 2 + wrapped_length
        wrapped = blob[id_end + 2 : wrapped_end]
        nonce = blob[wrapped_end : wrapped_end + NONCE_BYTES]
        ciphertext = blob[wrapped_end + NONCE_BYTES :]
        if len(wrapped) != wrapped_length or len(nonce) != NONCE_BYTES or not ciphertext:
            raise SealingError("truncated envelope")
        data_key = self._wrapper.unwrap(key_id, wrapped, _wrap_aad(key_id, aad))
        if len(data_key) != DATA_KEY_BYTES:
            raise SealingError("the wrapped data key is not 256 bits")
        try:
            return AESGCM(data_key).decrypt(nonce, ciphertext, aad)
        except InvalidTag:
            raise SealingError("envelope does not open: tampered, or other key or record") from None
