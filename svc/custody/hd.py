"""BIP-32 private derivation (from the deposit root's seed, inside custody only).

Public derivation (from the extended public key, what the wallet service does) is the kit's
(svc/kit/hd.py) and gives the same child public keys for non-hardened indices; its names are
re-exported here for custody's modules.
"""

from __future__ import annotations

from dataclasses import dataclass

import coincurve

from svc.kit.hd import CURVE_ORDER as CURVE_ORDER
from svc.kit.hd import DEPTH_MAX as DEPTH_MAX
from svc.kit.hd import EVM_ACCOUNT_PATH as EVM_ACCOUNT_PATH
from svc.kit.hd import HARDENED as HARDENED
from svc.kit.hd import INDEX_MAX as INDEX_MAX
from svc.kit.hd import DerivationError as DerivationError
from svc.kit.hd import ExtendedPublic as ExtendedPublic
from svc.kit.hd import base58check_decode as base58check_decode
from svc.kit.hd import base58check_encode as base58check_encode
from svc.kit.hd import checked_tweak, hash160, hmac_sha512
from svc.kit.hd import evm_address as evm_address
from svc.kit.hd import parse_path as parse_path

SEED_BYTES_MIN = 16
SEED_BYTES_MAX = 64
MASTER_HMAC_KEY = b"Bitcoin seed"


@dataclass(frozen=True)
class ExtendedPrivate:
    """A BIP-32 extended private key. Lives only in custody's memory while it signs or derives."""

    private_key: bytes
    chain_code: bytes
    depth: int = 0
    parent_fingerprint: bytes = b"\0\0\0\0"
    child_number: int = 0

    def __repr__(self) -> str:
        return f"ExtendedPrivate(depth={self.depth}, child_number={self.child_number})"

    @classmethod
    def from_seed(cls, seed: bytes) -> ExtendedPrivate:
        if not SEED_BYTES_MIN <= len(seed) <= SEED_BYTES_MAX:
            raise DerivationError(f"a seed has {SEED_BYTES_MIN} to {SEED_BYTES_MAX} bytes")
        left, right = hmac_sha512(MASTER_HMAC_KEY, seed)
        if not 0 < int.from_bytes(left, "big") < CURVE_ORDER:
            raise DerivationError("seed gives an invalid master key: generate another")
        return cls(left, right)

    @property
    def public_key(self) -> bytes:
        return coincurve.PrivateKey(self.private_key).public_key.format()

    def neuter(self) -> ExtendedPublic:
        return ExtendedPublic(
            self.public_key, self.chain_code, self.depth, self.parent_fingerprint, self.child_number
        )

    def child(self, index: int) -> ExtendedPrivate:
        """CKDpriv: a hardened or non-hardened child."""
        if not 0 <= index <= INDEX_MAX:
            raise DerivationError(f"index {index} out of range")
        if self.depth >= DEPTH_MAX:
            raise DerivationError("depth limit reached")
        data = b"\0" + self.private_key if index >= HARDENED else self.public_key
        left, right = hmac_sha512(self.chain_code, data + index.to_bytes(4, "big"))
        try:
            key = coincurve.PrivateKey(self.private_key).add(checked_tweak(left))
        except ValueError as error:
            raise DerivationError(f"child {index} is zero: use the next index") from error
        return ExtendedPrivate(key.secret, right, self.depth + 1, hash160(self.public_key)[:4], index)

    def derive(self, indices: tuple[int, ...]) -> ExtendedPrivate:
        node = self
        for index in indices:
            node = node.child(index)
        return node
