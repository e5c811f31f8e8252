"""SignTransaction's sequence: decode, authorise, sign in the key backend, check, record.

Everything is decided inside one database transaction that locks the wallet (a concurrent
DisableCustodyWallet either happens before, and the request is refused, or waits) and, for a
movement, the movement. A granted signature, its audit record, its event, the approval's first use
and the movement's nonce binding commit together with the idempotency key, so a retry returns the
same signed transaction. A refusal or a backend failure rolls that back and is then recorded on its
own: every request leaves a record.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from finmesh.custody.v1 import custody_resources_pb2 as resources
from finmesh.custody.v1 import custody_service_pb2 as service
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from svc.custody import approvals, convert, domain, ethereum, events, store
from svc.custody.approvals import TrustedIssuer
from svc.custody.config import ChainAssets
from svc.custody.domain import Claims, Movement, MovementState, Outcome, Refusal, Refused, Wallet, WalletKind
from svc.custody.ethereum import MalformedTransaction, SignatureMismatch, Transfer, TransferKind, Unsigned
from svc.custody.hd import (
    EVM_ACCOUNT_PATH,
    HARDENED,
    DerivationError,
    ExtendedPublic,
    evm_address,
    parse_path,
)
from svc.custody.keys import Backend, DepositRootKeys, KeyBackendError, KeyRecord, Keys
from svc.kit import errors, idempotency
from svc.kit.db import Database

METHOD = "/finmesh.custody.v1.CustodyService/SignTransaction"
MESSAGE_CHARS_MAX = 1000


def _now_us() -> int:
    return time.time_ns() // 1000


@dataclass
class Request:
    """One signature request and the audit record it is building."""

    message: service.SignTransactionRequest
    caller: str
    record: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Authorised:
    transaction: Unsigned
    digest: bytes
    sender_public_key: bytes
    claims: Claims | None
    claims_digest: str
    movement: Movement | None


def deposit_child(wallet: Wallet, path: str) -> ExtendedPublic:
    """The public node at `path` under a deposit root: account path, then non-hardened indices."""
    prefix = EVM_ACCOUNT_PATH + "/"
    try:
        indices = parse_path(path)
    except DerivationError as error:
        raise Refused(Refusal.MALFORMED_TRANSACTION, str(error)) from None
    account_depth = len(parse_path(EVM_ACCOUNT_PATH))
    below = indices[account_depth:]
    if not path.startswith(prefix) or not below or any(index >= HARDENED for index in below):
        raise Refused(
            Refusal.MALFORMED_TRANSACTION, f"{path!r} is not a non-hardened path under {EVM_ACCOUNT_PATH}"
        )
    return ExtendedPublic.parse(wallet.xpub).derive(below)


class Signing:
    """The signing policy in front of the key backends."""

    def __init__(
        self,
        database: Database,
        keys: Mapping[Backend, Keys],
        roots: DepositRootKeys,
        issuers: Mapping[str, TrustedIssuer],
        chains: Mapping[str, ChainAssets],
        approval_lifetime_max_s: int,
    ) -> None:
        self.database = database
        self.keys = keys
        self.roots = roots
        self.issuers = issuers
        self.chains = chains
        self.approval_lifetime_max_s = approval_lifetime_max_s

    async def sign(
        self, message: service.SignTransactionRequest, caller: str
    ) -> service.SignTransactionResponse:
        """The signed transaction, or PERMISSION_DENIED / UNAVAILABLE after recording why not."""
        request = Request(message, caller)
        try:
            try:
                return await self._sign_once(request)
            except IntegrityError:
                # A concurrent first use of the same approval won; now it is bound, decide again.
                return await self._sign_once(request)
        except Refused as refusal:
            record_id = await self._record_failure(request, Outcome.REFUSED, refusal.reason, refusal.message)
            raise domain.signing_refused(refusal.reason, refusal.message, record_id) from None
        except KeyBackendError as failure:
            message_text = f"key backend failed: {failure}"
            record_id = await self._record_failure(request, Outcome.BACKEND_ERROR, None, message_text)
            raise errors.DependencyUnavailable(
                "the key backend failed; nothing was signed, the request may be retried",
                metadata={"record_id": record_id},
            ) from None

    async def _sign_once(self, request: Request) -> service.SignTransactionResponse:
        message = request.message
        request.record = {
            "record_id": str(uuid.uuid4()),
            "request_time_us": _now_us(),
            "caller": request.caller[:32],
            "request_id": message.request_id,
            "wallet_id": message.wallet_id,
            "wallet_kind": 0,
            "key_id": "",
            "derivation_path": message.derivation_path,
            "chain": message.transaction.chain,
            "from_address": message.transaction.from_address,
            "to_address": "",
            "asset": "",
            "amount": 0,
            "nonce": message.transaction.nonce,
            "signing_hash": "",
            "tx_hash": "",
            "approval_id": "",
            "purpose": 0,
            "reference": "",
            "movement_id": message.authorization.movement_id,
            "outcome": int(Outcome.GRANTED),
            "refusal_reason": 0,
            "message": "",
        }

        async def work(session: AsyncSession) -> service.SignTransactionResponse:
            wallet = await store.wallet_by_id(session, message.wallet_id, lock=True)
            if wallet is None:
                raise errors.NotFound(
                    f"no wallet {message.wallet_id}", metadata={"wallet_id": message.wallet_id}
                )
            request.record.update(wallet_kind=int(wallet.kind), key_id=wallet.key_id)
            authorised = await self._authorise(session, wallet, request)
            return await self._grant(session, wallet, request, authorised)

        return await idempotency.run_once(
            self.database, METHOD, message, service.SignTransactionResponse, work
        )

    def _decode(self, request: Request) -> tuple[Unsigned, Transfer, str]:
        """The transaction, the transfer it makes and its asset; Refused if custody cannot read it."""
        message = request.message.transaction
        chain = self.chains.get(message.chain)
        if chain is None:
            raise Refused(
                Refusal.MALFORMED_TRANSACTION, f"chain {message.chain!r} is not configured in custody"
            )
        try:
            transaction = convert.unsigned_of(message)
            transfer = ethereum.decode_transfer(transaction)
            digest = ethereum.signing_hash(transaction)
        except MalformedTransaction as error:
            raise Refused(Refusal.MALFORMED_TRANSACTION, str(error)) from None
        if transaction.chain_id != chain.chain_id:
            raise Refused(
                Refusal.MALFORMED_TRANSACTION, f"chain id {transaction.chain_id} is not {message.chain}'s"
            )
        if transfer.kind is TransferKind.ERC20:
            tokens = {address.lower(): asset for address, asset in chain.tokens.items()}
            asset = tokens.get(transfer.token.lower())
            if asset is None:
                raise Refused(Refusal.MALFORMED_TRANSACTION, f"token {transfer.token} is not supported")
        else:
            asset = chain.native_asset
        request.record.update(
            to_address=transfer.recipient,
            asset=asset,
            amount=transfer.amount,
            signing_hash="0x" + digest.hex(),
        )
        return transaction, transfer, asset

    async def _authorise(self, session: AsyncSession, wallet: Wallet, request: Request) -> Authorised:
        message = request.message
        transaction, transfer, asset = self._decode(request)
        chain = message.transaction.chain
        path = message.derivation_path
        if wallet.kind is WalletKind.DEPOSIT_ROOT:
            if not path:
                raise Refused(Refusal.MALFORMED_TRANSACTION, "a deposit root signs for a derivation path")
            sender_public_key = deposit_child(wallet, path).public_key
        else:
            if path:
                raise Refused(
                    Refusal.MALFORMED_TRANSACTION, "only a deposit root signs for a derivation path"
                )
            sender_public_key = wallet.public_key
        domain.check_wallet_may_sign(wallet, transaction, evm_address(sender_public_key), chain)
        now_us = _now_us()
        authorization = message.authorization
        kind = authorization.WhichOneof("authorization")
        if kind == "approval":
            claims = approvals.verify(authorization.approval, self.issuers, self.approval_lifetime_max_s)
            request.record.update(
                approval_id=claims.approval_id, purpose=int(claims.purpose), reference=claims.reference
            )
            domain.check_approval(
                wallet,
                claims,
                transaction,
                transfer,
                chain=chain,
                asset=asset,
                derivation_path=path,
                now_us=now_us,
            )
            await self._check_destination(session, claims, transfer, chain)
            digest = approvals.claims_digest(authorization.approval.claims)
            used = await store.approval_use(session, claims.approval_id)
            if used is not None and used != digest:
                raise Refused(Refusal.APPROVAL_REUSED, "the approval id was already used with other claims")
            return Authorised(
                transaction, bytes.fromhex(request.record["signing_hash"][2:]), sender_public_key, claims,
                digest if used is None else "", None,
            )  # fmt: skip
        if kind == "movement_id":
            movement = await store.movement_by_id(session, authorization.movement_id, lock=True)
            if movement is None:
                raise Refused(Refusal.NO_AUTHORIZATION, f"no movement {authorization.movement_id}")
            decisions = await store.decisions_of(session, movement.movement_id)
            domain.check_movement(
                wallet, movement, decisions, transaction, transfer, chain=chain, asset=asset
            )
            return Authorised(
                transaction, bytes.fromhex(request.record["signing_hash"][2:]), sender_public_key, None, "",
                movement,
            )  # fmt: skip
        raise Refused(Refusal.NO_AUTHORIZATION, "no approval or movement was given")

    async def _check_destination(
        self, session: AsyncSession, claims: Claims, transfer: Transfer, chain: str
    ) -> None:
        """Sweeps go to a hot wallet of custody; gas top-ups to the deposit address they name."""
        if transfer.kind is TransferKind.CANCEL:
            return
        if claims.purpose is domain.Purpose.DEPOSIT_SWEEP:
            hot = [
                wallet
                for wallet in await store.wallets_by_address(session, transfer.recipient)
                if wallet.kind is WalletKind.HOT and chain in wallet.chains
            ]
            if not hot:
                raise Refused(
                    Refusal.DESTINATION_NOT_ALLOWED, "a deposit sweep must go to a custody hot wallet"
                )
        elif claims.purpose is domain.Purpose.GAS_TOP_UP:
            root = await store.active_deposit_root(session, domain.ChainFamily.EVM)
            if root is None or not claims.derivation_path or transfer.kind is not TransferKind.NATIVE:
                raise Refused(
                    Refusal.DESTINATION_NOT_ALLOWED, "a gas top-up pays native coin to a deposit address"
                )
            if evm_address(deposit_child(root, claims.derivation_path).public_key) != transfer.recipient:
                raise Refused(
                    Refusal.DESTINATION_NOT_ALLOWED,
                    "the recipient is not the deposit address of the approval's path",
                )

    async def _grant(
        self, session: AsyncSession, wallet: Wallet, request: Request, authorised: Authorised
    ) -> service.SignTransactionResponse:
        transaction = authorised.transaction
        key = _key_record(wallet)
        if wallet.kind is WalletKind.DEPOSIT_ROOT:
            r, s = await self.roots.sign(key, authorised.digest, request.message.derivation_path)
        else:
            backend = self.keys.get(Backend(wallet.backend))
            if backend is None:
                raise KeyBackendError(
                    f"backend {Backend(wallet.backend).name} is not configured in this deployment"
                )
            r, s = await backend.sign(key, authorised.digest)
        try:
            signature = ethereum.ethereum_signature(
                authorised.digest, r, s, authorised.sender_public_key, transaction
            )
            signed = ethereum.assemble(transaction, signature)
            sender = evm_address(authorised.sender_public_key)
            # Second check, on the assembled transaction: it must recover to the sender.
            if ethereum.recover_sender(transaction, signature) != sender:
                raise SignatureMismatch("the assembled transaction does not recover to the sender")
        except SignatureMismatch as error:
            raise KeyBackendError(str(error)) from None
        tx_hash = "0x" + signed.tx_hash.hex()
        request.record.update(tx_hash=tx_hash)
        record_id = request.record["record_id"]
        if authorised.claims is not None and authorised.claims_digest:
            await store.insert_approval_use(
                session, authorised.claims.approval_id, authorised.claims_digest,
                request.message.authorization.approval.issuer_key_id, record_id, _now_us(),
            )  # fmt: skip
        if authorised.movement is not None:
            await self._bind_movement(session, authorised.movement, transaction.nonce, tx_hash)
        await store.insert_record(session, request.record)
        record = convert.record_message(request.record)
        await events.publish_signature(session, record)
        return service.SignTransactionResponse(
            signed_transaction="0x" + signed.raw.hex(),
            tx_hash=tx_hash,
            signature=_signature_message(signature),
            signer_address=sender,
            record_id=record_id,
        )

    async def _bind_movement(
        self, session: AsyncSession, movement: Movement, nonce: int, tx_hash: str
    ) -> None:
        """The first signature binds the movement to its nonce (APPROVED -> SIGNING); a replacement
        keeps the nonce and records the newest hash."""
        now_us = _now_us()
        if movement.state is MovementState.APPROVED:
            domain.transition_movement(movement, MovementState.SIGNING)
        assert movement.nonce in (None, nonce), (movement.nonce, nonce)
        bound = replace(
            movement, state=MovementState.SIGNING, nonce=nonce, tx_hash=tx_hash, update_time_us=now_us,
            version=movement.version + 1,
        )  # fmt: skip
        await store.update_movement(session, bound)
        decisions = await store.decisions_of(session, movement.movement_id)
        if movement.state is not bound.state:
            await events.publish_movement_state_changed(
                session, convert.movement_message(bound, decisions), int(movement.state)
            )

    async def _record_failure(
        self, request: Request, outcome: Outcome, reason: Refusal | None, message: str
    ) -> str:
        """Appends the record of a refused or failed request, in a transaction of its own."""
        values = dict(request.record)
        values.update(
            record_id=str(uuid.uuid4()),
            outcome=int(outcome),
            refusal_reason=int(reason) if reason is not None else 0,
            message=message[:MESSAGE_CHARS_MAX],
            tx_hash="",
        )
        async with self.database.transaction() as session:
            await store.insert_record(session, values)
            await events.publish_signature(session, convert.record_message(values))
        return str(values["record_id"])


def _key_record(wallet: Wallet) -> KeyRecord:
    return KeyRecord(
        wallet.key_id,
        Backend(wallet.backend),
        wallet.public_key,
        wallet.backend_reference,
        wallet.sealed,
        wallet.xpub,
    )


def _signature_message(signature: ethereum.Signature) -> resources.EcdsaSignature:
    return resources.EcdsaSignature(
        r="0x" + signature.r.to_bytes(32, "big").hex(),
        s="0x" + signature.s.to_bytes(32, "big").hex(),
        y_parity=signature.y_parity,
        v=signature.v,
    )
