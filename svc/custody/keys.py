"""Where custody's private keys live, behind one interface: generate a key, sign a digest.

- `Pkcs11Keys`: secp256k1 keys generated inside a PKCS#11 token (SoftHSM2 in development, any
  module by configuration), CKA_SENSITIVE and not CKA_EXTRACTABLE, so the private value never
  leaves the token; the token signs (CKM_ECDSA over the Keccak-256 signing hash).
- `EnvelopeKeys`: software keys (coincurve) sealed with AES-256-GCM under a fresh data key wrapped
  by the master key of a `KeyWrapper`; opened in memory only to sign. The embedded default.
- `DepositRootKeys`: the BIP-32 seed of a deposit root, sealed the same way. Standard PKCS#11
  has no mechanism for BIP-32's scalar addition, so a token cannot derive child private keys of
  its own; the seed is therefore an envelope, and when an HSM is configured the master key that
  wraps it is an AES-256 key inside the token (`Pkcs11Wrapper`), so the seed opens only through
  the HSM. Child keys exist in memory only while a sweep from a deposit address is signed.

PKCS#11 calls block, and a module's login state is shared by the process's sessions, so one
session is opened once and used from one worker thread.
"""

from __future__ import annotations

import asyncio
import secrets
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, Protocol

import coincurve
import pkcs11
from pkcs11 import Attribute, KeyType, Mechanism, ObjectClass
from pkcs11.mechanisms import GCMParams
from pkcs11.util.ec import encode_named_curve_parameters

from svc.custody.ethereum import raw_signature
from svc.custody.hd import EVM_ACCOUNT_PATH, ExtendedPrivate, parse_path
from svc.kit.envelope import Envelope
from svc.kit.sealing import NONCE_BYTES, SealingError

CURVE = "secp256k1"
UNCOMPRESSED_POINT_BYTES = 65
SEED_BYTES = 32
GCM_TAG_BITS = 128
KEY_AAD_PREFIX = b"finmesh.custody.key:"
SEED_AAD_PREFIX = b"finmesh.custody.seed:"


class Backend(IntEnum):
    """finmesh.custody.v1.KeyBackend."""

    HSM_PKCS11 = 1
    SOFTWARE_ENVELOPE = 2


# Errors after which the session is gone (token restarted, session dropped): the next call logs in
# afresh instead of failing until custody restarts.
SESSION_LOST = (
    pkcs11.SessionClosed,
    pkcs11.SessionHandleInvalid,
    pkcs11.UserNotLoggedIn,
    pkcs11.DeviceRemoved,
    pkcs11.DeviceError,
    pkcs11.TokenNotPresent,
)


class KeyBackendError(RuntimeError):
    """The key backend failed (token unavailable, envelope does not open); nothing was signed."""


@dataclass(frozen=True)
class KeyRecord:
    """What custody stores about a key: never the private value in clear."""

    key_id: str
    backend: Backend
    public_key: bytes  # compressed, 33 bytes
    reference: str  # token label, or the master key id of the envelope
    sealed: bytes = b""  # the envelope (software keys, deposit-root seeds); empty for HSM keys
    xpub: str = ""  # deposit roots: the serialised extended public key of the account node


class Keys(Protocol):
    """A key backend."""

    backend: Backend

    async def generate(self, key_id: str) -> KeyRecord:
        """A new secp256k1 key with this id."""
        ...

    async def sign(self, key: KeyRecord, digest: bytes) -> tuple[int, int]:
        """(r, s) of an ECDSA signature of a 32-byte digest (s not yet normalised)."""
        ...


class Pkcs11Token:
    """One logged-in session on a PKCS#11 token, used from a single worker thread."""

    def __init__(self, module: str, token_label: str, pin: str) -> None:
        self.module = module
        self.token_label = token_label
        self._pin = pin
        self._session: Any = None
        self._handles: dict[str, Any] = {}
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pkcs11")
        self._lock = threading.Lock()

    def _open(self) -> Any:

        if self._session is None:
            try:
                token = pkcs11.lib(self.module).get_token(token_label=self.token_label)
                self._session = token.open(user_pin=self._pin, rw=True)
            except (pkcs11.PKCS11Error, RuntimeError, OSError) as error:
                raise KeyBackendError(
                    f"cannot open PKCS#11 token {self.token_label!r} of {self.module}: {error!r}"
                ) from None
        return self._session

    def _call(self, work: Any, args: tuple[Any, ...]) -> Any:

        with self._lock:
            session = self._open()
            try:
                return work(session, *args)
            except pkcs11.PKCS11Error as error:
                if isinstance(error, SESSION_LOST):
                    self._session = None
                    self._handles.clear()
                raise KeyBackendError(f"PKCS#11 {type(error).__name__}: {error}") from None

    async def run(self, work: Any, *args: Any) -> Any:
        """Runs `work(session, *args)` on the token's thread; PKCS#11 errors become KeyBackendError."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, self._call, work, args)

    def run_blocking(self, work: Any, *args: Any) -> Any:
        """`run` for a caller that is itself a worker thread (never the event loop's)."""
        return self._executor.submit(self._call, work, args).result()

    def handle(self, session: Any, key_id: str, object_class: Any) -> Any:
        """The token object of a key id (cached: ids are never reused)."""

        cache_key = f"{int(object_class)}:{key_id}"
        if cache_key not in self._handles:
            found = list(session.get_objects({Attribute.CLASS: object_class, Attribute.ID: key_id.encode()}))
            if len(found) != 1:
                raise pkcs11.NoSuchKey(f"{len(found)} objects with id {key_id!r}")
            self._handles[cache_key] = found[0]
        return self._handles[cache_key]

    async def close(self) -> None:
        def close_session() -> None:
            with self._lock:
                if self._session is not None:
                    self._session.close()
                    self._session = None
                    self._handles.clear()

        await asyncio.get_running_loop().run_in_executor(self._executor, close_session)
        self._executor.shutdown(wait=True)


def _compressed(ec_point: bytes) -> bytes:
    """CKA_EC_POINT (a DER OCTET STRING around the uncompressed point, or the bare point)."""
    point = ec_point
    if (
        len(point) == UNCOMPRESSED_POINT_BYTES + 2
        and point[0] == 0x04
        and point[1] == UNCOMPRESSED_POINT_BYTES
    ):
        point = point[2:]
    return coincurve.PublicKey(point).format()


class Pkcs11Keys:
    """secp256k1 keys generated and used inside a PKCS#11 token."""

    backend = Backend.HSM_PKCS11

    def __init__(self, token: Pkcs11Token) -> None:
        self.token = token

    async def generate(self, key_id: str) -> KeyRecord:
        def generate(session: Any) -> bytes:

            parameters = session.create_domain_parameters(
                KeyType.EC, {Attribute.EC_PARAMS: encode_named_curve_parameters(CURVE)}, local=True
            )
            public, _private = parameters.generate_keypair(
                store=True,
                label=key_id,
                id=key_id.encode(),
                public_template={Attribute.VERIFY: True, Attribute.TOKEN: True},
                private_template={
                    Attribute.SIGN: True,
                    Attribute.TOKEN: True,
                    Attribute.PRIVATE: True,
                    Attribute.SENSITIVE: True,
                    Attribute.EXTRACTABLE: False,
                },
            )
            point: bytes = public[Attribute.EC_POINT]
            return point

        point = await self.token.run(generate)
        return KeyRecord(key_id, self.backend, _compressed(point), self.token.token_label)

    async def sign(self, key: KeyRecord, digest: bytes) -> tuple[int, int]:
        def sign(session: Any) -> bytes:

            private = self.token.handle(session, key.key_id, ObjectClass.PRIVATE_KEY)
            signature: bytes = private.sign(digest, mechanism=Mechanism.ECDSA)
            return signature

        return raw_signature(await self.token.run(sign))


class Pkcs11Wrapper:
    """A kit KeyWrapper whose master key is an AES-256 key inside the token (created if missing)."""

    def __init__(self, token: Pkcs11Token, key_label: str) -> None:
        self.token = token
        self.key_label = key_label
        self._key_id = f"pkcs11:{token.token_label}/{key_label}"

    def current_key_id(self) -> str:
        return self._key_id

    async def ensure_key(self) -> None:
        """Creates the master key in the token on first start; it never leaves the token."""

        def ensure(session: Any) -> None:

            found = list(
                session.get_objects(
                    {Attribute.CLASS: ObjectClass.SECRET_KEY, Attribute.LABEL: self.key_label}
                )
            )
            if not found:
                session.generate_key(
                    KeyType.AES,
                    256,
                    label=self.key_label,
                    id=self.key_label.encode(),
                    store=True,
                    template={Attribute.SENSITIVE: True, Attribute.EXTRACTABLE: False},
                )

        await self.token.run(ensure)

    def _gcm(self, session: Any, encrypt: bool, data: bytes, nonce: bytes, aad: bytes) -> bytes:

        key = self.token.handle(session, self.key_label, ObjectClass.SECRET_KEY)
        parameters = GCMParams(nonce, aad, GCM_TAG_BITS)
        operation = key.encrypt if encrypt else key.decrypt
        result: bytes = operation(data, mechanism=Mechanism.AES_GCM, mechanism_param=parameters)
        return result

    def _run(self, work: Any, *args: Any) -> bytes:
        # The envelope interface is synchronous: custody calls it from worker threads only.
        result: bytes = self.token.run_blocking(work, *args)
        return result

    def wrap(self, key_id: str, data_key: bytes, aad: bytes) -> bytes:
        if key_id != self._key_id:
            raise SealingError(f"key {key_id!r} is not this token's master key")
        nonce = secrets.token_bytes(NONCE_BYTES)
        return nonce + self._run(self._gcm, True, data_key, nonce, aad)

    def unwrap(self, key_id: str, wrapped: bytes, aad: bytes) -> bytes:
        if key_id != self._key_id:
            raise SealingError(f"data key wrapped by {key_id!r}, not by this token's master key")
        try:
            return self._run(self._gcm, False, wrapped[NONCE_BYTES:], wrapped[:NONCE_BYTES], aad)
        except KeyBackendError as error:
            raise SealingError(f"wrapped data key does not open in the token: {error}") from None


async def _in_thread(work: Any, *args: Any, **kwargs: Any) -> Any:
    try:
        return await asyncio.to_thread(work, *args, **kwargs)
    except SealingError as error:
        raise KeyBackendError(f"sealed key does not open: {error}") from None


class EnvelopeKeys:
    """Software secp256k1 keys sealed under the envelope's master key."""

    backend = Backend.SOFTWARE_ENVELOPE

    def __init__(self, envelope: Envelope) -> None:
        self.envelope = envelope

    async def generate(self, key_id: str) -> KeyRecord:
        private = coincurve.PrivateKey()
        sealed = await _in_thread(self.envelope.seal, private.secret, aad=KEY_AAD_PREFIX + key_id.encode())
        return KeyRecord(
            key_id, self.backend, private.public_key.format(), self.envelope.master_key_id, sealed
        )

    async def sign(self, key: KeyRecord, digest: bytes) -> tuple[int, int]:
        secret = await _in_thread(self.envelope.open, key.sealed, aad=KEY_AAD_PREFIX + key.key_id.encode())
        return _sign_with(secret, digest)


def _sign_with(secret: bytes, digest: bytes) -> tuple[int, int]:
    recoverable = coincurve.PrivateKey(secret).sign_recoverable(digest, hasher=None)
    return int.from_bytes(recoverable[:32], "big"), int.from_bytes(recoverable[32:64], "big")


class DepositRootKeys:
    """BIP-32 seeds of deposit roots, sealed; the xpub of the EVM account node is public."""

    backend = Backend.SOFTWARE_ENVELOPE
    account_path = EVM_ACCOUNT_PATH

    def __init__(self, envelope: Envelope) -> None:
        self.envelope = envelope

    async def generate(self, key_id: str) -> KeyRecord:
        seed = secrets.token_bytes(SEED_BYTES)
        account = ExtendedPrivate.from_seed(seed).derive(parse_path(self.account_path)).neuter()
        sealed = await _in_thread(self.envelope.seal, seed, aad=SEED_AAD_PREFIX + key_id.encode())
        return KeyRecord(
            key_id, self.backend, account.public_key, self.envelope.master_key_id, sealed, account.serialize()
        )

    async def sign(self, key: KeyRecord, digest: bytes, path: str) -> tuple[int, int]:
        """Signs with the child key at `path` (a full path under the account node)."""
        seed = await _in_thread(self.envelope.open, key.sealed, aad=SEED_AAD_PREFIX + key.key_id.encode())
        child = ExtendedPrivate.from_seed(seed).derive(parse_path(path))
        return _sign_with(child.private_key, digest)
