"""The key layer on a real SoftHSM2 token: the envelope master key lives in the token and never
leaves it, a deposit root's seed opens only through that key, and a broken backend signature is
never passed on."""

from __future__ import annotations

import uuid

import pkcs11
import pytest
from pkcs11 import Attribute, ObjectClass

from svc.custody.ethereum import (
    SignatureMismatch,
    TransactionType,
    Unsigned,
    ethereum_signature,
    signing_hash,
)
from svc.custody.keys import DepositRootKeys, KeyBackendError, Pkcs11Keys, Pkcs11Token, Pkcs11Wrapper
from svc.kit.envelope import Envelope
from tests.harness.softhsm import SoftHsmToken

TRANSACTION = Unsigned(
    chain_id=1, type=TransactionType.EIP1559, sender="0x" + "11" * 20, to="0x" + "22" * 20, value=1, data=b"",
    nonce=0, gas_limit=21_000, gas_price=0, max_fee_per_gas=2, max_priority_fee_per_gas=1,
)  # fmt: skip


async def test_seeds_open_only_through_the_tokens_master_key(softhsm: SoftHsmToken) -> None:
    token = Pkcs11Token(softhsm.module, softhsm.label, softhsm.user_pin)
    try:
        label = f"master-{uuid.uuid4().hex[:8]}"
        wrapper = Pkcs11Wrapper(token, label)
        await wrapper.ensure_key()
        await wrapper.ensure_key()  # a second start finds the key
        roots = DepositRootKeys(Envelope(wrapper))
        root = await roots.generate(f"root-{uuid.uuid4().hex[:8]}")
        assert root.reference == f"pkcs11:{softhsm.label}/{label}" and root.xpub.startswith("xpub")
        digest = signing_hash(TRANSACTION)
        r, s = await roots.sign(root, digest, "m/44'/60'/0'/0/3")
        assert r and s
        tampered = bytearray(root.sealed)
        tampered[-1] ^= 1
        with pytest.raises(KeyBackendError):
            await roots.sign(
                type(root)(**{**root.__dict__, "sealed": bytes(tampered)}), digest, "m/44'/60'/0'/0/3"
            )
        other_wrapper = Pkcs11Wrapper(token, f"other-{uuid.uuid4().hex[:8]}")
        await other_wrapper.ensure_key()
        other = DepositRootKeys(Envelope(other_wrapper))
        with pytest.raises(KeyBackendError):
            await other.sign(root, digest, "m/44'/60'/0'/0/3")

        def master_key_attributes(session: object) -> dict[str, bool]:
            key = session.get_key(object_class=ObjectClass.SECRET_KEY, label=label)  # type: ignore[attr-defined]
            with pytest.raises(pkcs11.AttributeSensitive):
                key[Attribute.VALUE]
            return {"extractable": key[Attribute.EXTRACTABLE], "sensitive": key[Attribute.SENSITIVE]}

        assert await token.run(master_key_attributes) == {"extractable": False, "sensitive": True}
    finally:
        await token.close()


async def test_a_signature_that_recovers_to_another_key_is_refused(softhsm: SoftHsmToken) -> None:
    token = Pkcs11Token(softhsm.module, softhsm.label, softhsm.user_pin)
    try:
        keys = Pkcs11Keys(token)
        mine = await keys.generate(f"k-{uuid.uuid4().hex[:8]}")
        theirs = await keys.generate(f"k-{uuid.uuid4().hex[:8]}")
        digest = signing_hash(TRANSACTION)
        r, s = await keys.sign(theirs, digest)
        with pytest.raises(SignatureMismatch):
            ethereum_signature(digest, r, s, mine.public_key, TRANSACTION)
        good = ethereum_signature(digest, *(await keys.sign(mine, digest)), mine.public_key, TRANSACTION)
        assert good.s <= 0x7FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF5D576E7357A4501DDFE92F46681B20A0
        with pytest.raises(KeyBackendError):
            await keys.sign(type(mine)(**{**mine.__dict__, "key_id": "no-such-key"}), digest)
    finally:
        await token.close()


async def test_a_lost_session_fails_one_call_and_the_next_logs_in_again(softhsm: SoftHsmToken) -> None:
    token = Pkcs11Token(softhsm.module, softhsm.label, softhsm.user_pin)
    try:
        keys = Pkcs11Keys(token)
        key = await keys.generate(f"k-{uuid.uuid4().hex[:8]}")
        digest = signing_hash(TRANSACTION)
        await keys.sign(key, digest)
        await token.run(lambda session: session.close())  # what a token restart does to a session
        with pytest.raises(KeyBackendError):
            await keys.sign(key, digest)
        r, s = await keys.sign(key, digest)
        assert ethereum_signature(digest, r, s, key.public_key, TRANSACTION).r == r
    finally:
        await token.close()
