"""BIP-32 public derivation over secp256k1 (coincurve), and EVM addresses: what any service may do
with an extended public key.

Custody's deposit root hands out the xpub of its BIP-44 account (`m/44'/60'/0'`); deposit address
`i` is `account/0/i`, derived here from public data only (the wallet service). Private derivation,
which gives the same child public keys for non-hardened indices, lives in custody alone
(svc/custody/hd.py).
"""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass

import coincurve
from eth_utils.address import to_checksum_address
from eth_utils.crypto import keccak

HARDENED = 0x8000_0000
INDEX_MAX = 0xFFFF_FFFF
CURVE_ORDER = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
XPUB_VERSION = bytes.fromhex("0488B21E")
SERIALIZED_BYTES = 78
DEPTH_MAX = 255
PATH_PATTERN = re.compile(r"^m(/[0-9]{1,10}'?){0,8}$")
BASE58_ALPHABET = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
EVM_ACCOUNT_PATH = "m/44'/60'/0'"
# The external chain of a BIP-44 account: deposit addresses are `<account>/0/<index>`.
EXTERNAL_CHAIN = 0


class DerivationError(ValueError):
    """A path, seed or extended key that BIP-32 does not accept."""


def parse_path(path: str) -> tuple[int, ...]:
    """`m/44'/60'/0'/0/7` -> indices (hardened ones with the 2^31 bit)."""
    if not PATH_PATTERN.match(path):
        raise DerivationError(f"not a derivation path: {path!r}")
    indices = []
    for part in path.split("/")[1:]:
        hardened = part.endswith("'")
        index = int(part.rstrip("'"))
        if index >= HARDENED:
            raise DerivationError(f"index {index} of {path!r} is at least 2^31")
        indices.append(index | HARDENED if hardened else index)
    return tuple(indices)


def hash160(data: bytes) -> bytes:
    """RIPEMD-160 of SHA-256 (BIP-32 key identifiers)."""
    return hashlib.new("ripemd160", hashlib.sha256(data).digest()).digest()


def base58check_encode(payload: bytes) -> str:
    data = payload + hashlib.sha256(hashlib.sha256(payload).digest()).digest()[:4]
    number = int.from_bytes(data, "big")
    encoded = ""
    while number:
        number, remainder = divmod(number, 58)
        encoded = BASE58_ALPHABET[remainder] + encoded
    leading_zeros = len(data) - len(data.lstrip(b"\0"))
    return "1" * leading_zeros + encoded


def base58check_decode(text: str) -> bytes:
    number = 0
    for character in text:
        position = BASE58_ALPHABET.find(character)
        if position < 0:
            raise DerivationError(f"{character!r} is not a base58 character")
        number = number * 58 + position
    body = number.to_bytes((number.bit_length() + 7) // 8, "big")
    data = b"\0" * (len(text) - len(text.lstrip("1"))) + body
    payload, checksum = data[:-4], data[-4:]
    if len(data) < 5 or hashlib.sha256(hashlib.sha256(payload).digest()).digest()[:4] != checksum:
        raise DerivationError("base58check checksum does not match")
    return payload


def hmac_sha512(key: bytes, data: bytes) -> tuple[bytes, bytes]:
    """HMAC-SHA512 split into its left (key material) and right (chain code) halves."""
    digest = hmac.new(key, data, hashlib.sha512).digest()
    return digest[:32], digest[32:]


def checked_tweak(left: bytes) -> bytes:
    """The left half as a tweak, refused when it is not below the curve order."""
    # BIP-32: an IL at or above the curve order makes the child invalid (probability ~2^-127);
    # the caller moves on to the next index.
    if int.from_bytes(left, "big") >= CURVE_ORDER:
        raise DerivationError("derived tweak is not below the curve order: use the next index")
    return left


@dataclass(frozen=True)
class ExtendedPublic:
    """A BIP-32 extended public key: the node's public key and chain code, and where it sits."""

    public_key: bytes  # compressed, 33 bytes
    chain_code: bytes
    depth: int = 0
    parent_fingerprint: bytes = b"\0\0\0\0"
    child_number: int = 0

    @property
    def fingerprint(self) -> bytes:
        return hash160(self.public_key)[:4]

    def child(self, index: int) -> ExtendedPublic:
        """CKDpub: a non-hardened child, from public data only."""
        if index >= HARDENED or index < 0:
            raise DerivationError("a hardened child cannot be derived from a public key")
        if self.depth >= DEPTH_MAX:
            raise DerivationError("depth limit reached")
        left, right = hmac_sha512(self.chain_code, self.public_key + index.to_bytes(4, "big"))
        try:
            point = coincurve.PublicKey(self.public_key).add(checked_tweak(left))
        except ValueError as error:
            raise DerivationError(f"child {index} is the point at infinity: use the next index") from error
        return ExtendedPublic(point.format(), right, self.depth + 1, self.fingerprint, index)

    def derive(self, indices: tuple[int, ...]) -> ExtendedPublic:
        node = self
        for index in indices:
            node = node.child(index)
        return node

    def serialize(self) -> str:
        """Base58Check `xpub...`."""
        payload = (
            XPUB_VERSION
            + bytes([self.depth])
            + self.parent_fingerprint
            + self.child_number.to_bytes(4, "big")
            + self.chain_code
            + self.public_key
        )
        assert len(payload) == SERIALIZED_BYTES, len(payload)
        return base58check_encode(payload)

    @classmethod
    def parse(cls, xpub: str) -> ExtendedPublic:
        payload = base58check_decode(xpub)
        if len(payload) != SERIALIZED_BYTES or payload[:4] != XPUB_VERSION:
            raise DerivationError("not a mainnet xpub")
        key = payload[45:78]
        coincurve.PublicKey(key)
        return cls(key, payload[13:45], payload[4], payload[5:9], int.from_bytes(payload[9:13], "big"))


def evm_address(public_key: bytes) -> str:
    """EIP-55 address of a secp256k1 public key (compressed or uncompressed)."""
    uncompressed = coincurve.PublicKey(public_key).format(compressed=False)
    return str(to_checksum_address(keccak(uncompressed[1:])[-20:]))


def child_path(account_path: str, index: int) -> str:
    """The path of external address `index` under a BIP-44 account (`m/44'/60'/0'/0/7`)."""
    if not 0 <= index < HARDENED:
        raise DerivationError(f"address index {index} is not a non-hardened index")
    parse_path(account_path)
    return f"{account_path}/{EXTERNAL_CHAIN}/{index}"


def deposit_address(account: ExtendedPublic, index: int) -> str:
    """The EVM address of external child `index` of an account's extended public key."""
    return evm_address(account.derive((EXTERNAL_CHAIN, index)).public_key)
