"""Executes approved withdrawals, one persisted step at a time, so a crash anywhere resumes at the
step it was in and never sends a second payment:

1. APPROVED -> SIGNING: the chain gateway builds the transfer (nonce allocated; idempotent by
   request id) and the approval for custody is issued; both are stored with the transition.
2. SIGNING: custody signs the stored transaction under the stored approval (idempotent by request
   id); the signed bytes and hash are stored BEFORE anything is broadcast.
3. SIGNING -> BROADCAST: the stored bytes are broadcast (idempotent by hash). After a restart the
   same bytes are sent again, which the gateway and the chain see as the same transaction.
4. BROADCAST -> CONFIRMED (the hold and the fee posted, the gas booked) | FAILED (reverted: the
   gas booked, the hold voided). A transaction pending beyond the stuck timeout is replaced, at
   the same nonce with a higher fee, at most `replacements_max` times: whichever of them is
   mined, the payment is made once.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any

import grpc
from finmesh.chain_gateway.v1 import chain_gateway_resources_pb2 as chain_resources
from finmesh.chain_gateway.v1 import chain_gateway_service_pb2 as gateway
from finmesh.chain_gateway.v1 import chain_gateway_service_pb2_grpc as gateway_grpc
from finmesh.common.v1 import money_pb2
from finmesh.custody.v1 import custody_resources_pb2 as custody_resources
from finmesh.custody.v1 import custody_service_pb2 as custody_service
from finmesh.events.v1 import withdraw_events_pb2
from sqlalchemy.ext.asyncio import AsyncSession

from svc.kit import errors, remote
from svc.kit.client import as_service
from svc.kit.db import Database
from svc.withdraw import convert, domain, events, store
from svc.withdraw.approvals import ApprovalIssuer
from svc.withdraw.config import WithdrawSettings
from svc.withdraw.domain import AddressState, Outcome, Transaction, TxStatus, Withdrawal
from svc.withdraw.flow import Lifecycle, message_of, move, now_us
from svc.withdraw.peers import CALL_TIMEOUT_S, Custody
from svc.withdraw.states import VOIDING, State

log = logging.getLogger("finmesh.withdraw.execution")

WITHDRAWALS_PER_ROUND_MAX = 100
STEPS_PER_WITHDRAWAL_MAX = 6
# Gateway and custody answers that no retry changes.
PERMANENT_CODES = frozenset(
    {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.PERMISSION_DENIED}
)
REPLACEABLE = frozenset({TxStatus.PENDING, TxStatus.DROPPED})


class Executor:
    """The background worker: resumes interrupted requests, expires approvals, voids the holds of
    ended withdrawals, activates cooled-down addresses and executes approved withdrawals."""

    def __init__(
        self,
        database: Database,
        settings: WithdrawSettings,
        lifecycle: Lifecycle,
        channel: grpc.aio.Channel,
        custody: Custody,
        issuer: ApprovalIssuer | None,
    ) -> None:
        self.database = database
        self.settings = settings
        self.lifecycle = lifecycle
        self.gateway = gateway_grpc.ChainGatewayServiceStub(channel)
        self.custody = custody
        self.issuer = issuer

    async def run_once(self) -> int:
        """One round over everything due; returns how many steps were taken."""
        async with self.database.transaction() as session:
            due = await store.due_withdrawals(
                session,
                [
                    State.REQUESTED,
                    State.HELD,
                    State.RISK_REVIEW,
                    State.AWAITING_APPROVAL,
                    State.APPROVED,
                    State.SIGNING,
                    State.BROADCAST,
                ],
                WITHDRAWALS_PER_ROUND_MAX,
            )
            unsettled = await store.unsettled_holds(session, list(VOIDING), WITHDRAWALS_PER_ROUND_MAX)
        steps = await self.activate_addresses()
        for withdrawal in unsettled:
            await self._guarded(self.lifecycle.settle(withdrawal), withdrawal)
            steps += 1
        for withdrawal in due:
            steps += await self.advance(withdrawal)
        return steps

    async def _guarded(self, step: object, withdrawal: Withdrawal) -> bool:
        try:
            await step  # type: ignore[misc]
        except errors.DomainError as failure:
            log.warning("withdrawal %s not moved on: %s", withdrawal.withdrawal_id, failure.message)
            return False
        return True

    async def advance(self, withdrawal: Withdrawal) -> int:
        """Takes the withdrawal's steps until it waits (for approvers, the chain) or is done."""
        steps = 0
        current: Withdrawal | None = withdrawal
        while current is not None and steps < STEPS_PER_WITHDRAWAL_MAX:
            try:
                moved = await self.step(current)
            except errors.DomainError as failure:
                log.warning("withdrawal %s not moved on: %s", current.withdrawal_id, failure.message)
                return steps
            except grpc.aio.AioRpcError as failure:
                log.warning("withdrawal %s not moved on: %s", current.withdrawal_id, failure.details())
                return steps
            if moved is None:
                return steps
            steps += 1
            current = moved
        return steps

    async def step(self, withdrawal: Withdrawal) -> Withdrawal | None:
        """One persisted step; None when there is nothing to do now."""
        state = withdrawal.state
        if state is State.REQUESTED:
            try:
                return await self.lifecycle.place_hold(withdrawal)
            except errors.DomainError as refusal:
                if refusal.reason in ("INSUFFICIENT_FUNDS", "FROZEN"):
                    return None  # recorded FAILED by place_hold
                raise
        if state in (State.HELD, State.RISK_REVIEW):
            return await self.lifecycle.assess(withdrawal)
        if state is State.AWAITING_APPROVAL:
            expired = await self.lifecycle.expire_approvals(withdrawal)
            return expired if expired.state is not state else None
        if state in VOIDING:
            settled = await self.lifecycle.settle(withdrawal)
            return None if settled.hold is withdrawal.hold else settled
        if self.issuer is None or not self.settings.execution_enabled:
            return None
        if state is State.APPROVED:
            return await self._build(withdrawal)
        if state is State.SIGNING:
            return await self._sign_or_send(withdrawal)
        if state is State.BROADCAST:
            return await self._follow(withdrawal)
        return None

    # Steps

    async def _locked(self, session: AsyncSession, withdrawal_id: str) -> Withdrawal:
        found = await store.withdrawal_by_id(session, withdrawal_id, lock=True)
        assert found is not None, withdrawal_id
        return found

    async def _build(self, withdrawal: Withdrawal) -> Withdrawal | None:
        assert self.issuer is not None
        wallet_id = self.settings.hot_wallets.get(withdrawal.chain)
        if wallet_id is None:
            log.warning("no hot wallet configured for %s", withdrawal.chain)
            return None
        wallet = await self.custody.wallet(wallet_id)
        built = await self._gateway(
            "BuildTransfer",
            gateway.BuildTransferRequest(
                request_id=domain.step_id(withdrawal.withdrawal_id, "build"),
                chain=withdrawal.chain,
                from_address=wallet.address,
                recipient=withdrawal.destination,
                amount=money_pb2.Money(asset=withdrawal.asset, amount=str(withdrawal.amount)),
                reference=f"withdrawal:{withdrawal.withdrawal_id}",
                max_fee_per_gas=str(self.settings.fee_cap_per_gas),
            ),
        )
        unsigned = built.transaction
        async with self.database.transaction() as session:
            current = await self._locked(session, withdrawal.withdrawal_id)
            if current.state is not State.APPROVED:
                cancelled = current
            else:
                await store.insert_transaction(session, self._transaction(current, 0, unsigned))
                return await move(
                    session,
                    current,
                    State.SIGNING,
                    note=f"nonce {unsigned.nonce}",
                    source_wallet_id=wallet_id,
                )
        # Cancelled or rejected while the transfer was built: the nonce goes back.
        await self._gateway(
            "ReleaseNonce",
            gateway.ReleaseNonceRequest(
                request_id=domain.step_id(withdrawal.withdrawal_id, "release"),
                reservation_id=built.reservation.reservation_id,
                reason=f"withdrawal {cancelled.state.name.lower()} before signing",
            ),
        )
        return cancelled

    def _transaction(
        self, withdrawal: Withdrawal, seq: int, unsigned: chain_resources.UnsignedTransaction
    ) -> Transaction:
        assert self.issuer is not None
        time_us = now_us()
        approval = self.issuer.issue(
            approval_id=domain.approval_id_for(withdrawal.withdrawal_id, seq),
            withdrawal_id=withdrawal.withdrawal_id,
            transaction=unsigned,
            recipient=withdrawal.destination,
            asset=withdrawal.asset,
            amount=withdrawal.amount,
            now_us=time_us,
        )
        fee = unsigned.max_fee_per_gas or unsigned.gas_price
        return Transaction(
            withdrawal_id=withdrawal.withdrawal_id,
            seq=seq,
            unsigned=unsigned.SerializeToString(deterministic=True),
            approval=approval.SerializeToString(deterministic=True),
            signed_transaction="",
            tx_hash="",
            nonce=unsigned.nonce,
            fee_per_gas=int(fee or 0),
            status=TxStatus.UNSPECIFIED,
            broadcast_time_us=None,
            create_time_us=time_us,
        )

    async def _unsent(self, withdrawal_id: str) -> Transaction | None:
        async with self.database.transaction() as session:
            rows = await store.transactions_of(session, withdrawal_id)
        unsent = [row for row in rows if row.status is TxStatus.UNSPECIFIED]
        return unsent[-1] if unsent else None

    async def _sign(self, withdrawal: Withdrawal, transaction: Transaction) -> Transaction | None:
        """Custody's signature of a stored transaction, stored; None if custody refused."""
        request = custody_service.SignTransactionRequest(
            request_id=domain.step_id(withdrawal.withdrawal_id, f"sign.{transaction.seq}"),
            wallet_id=withdrawal.source_wallet_id,
            transaction=convert.unsigned_of(transaction.unsigned),
            authorization=custody_resources.SigningAuthorization(
                approval=custody_resources.SignedApproval.FromString(transaction.approval)
            ),
        )
        try:
            signed = await self.custody.sign(request)
        except grpc.aio.AioRpcError as error:
            if error.code() is grpc.StatusCode.PERMISSION_DENIED:
                log.warning("custody refused withdrawal %s: %s", withdrawal.withdrawal_id, error.details())
                return None
            raise remote.translate(error, "custody") from None
        stored = replace(
            transaction, signed_transaction=signed.signed_transaction, tx_hash=signed.tx_hash.lower()
        )
        async with self.database.transaction() as session:
            await store.update_transaction(session, stored)
        return stored

    async def _broadcast(
        self, withdrawal: Withdrawal, transaction: Transaction
    ) -> chain_resources.Transaction:
        sent = await self._gateway(
            "BroadcastTransaction",
            gateway.BroadcastTransactionRequest(
                request_id=domain.step_id(withdrawal.withdrawal_id, f"send.{transaction.seq}"),
                chain=withdrawal.chain,
                signed_transaction=transaction.signed_transaction,
            ),
        )
        found: chain_resources.Transaction = sent.transaction
        return found

    async def _sign_or_send(self, withdrawal: Withdrawal) -> Withdrawal | None:
        transaction = await self._unsent(withdrawal.withdrawal_id)
        assert transaction is not None, withdrawal.withdrawal_id
        if not transaction.signed_transaction:
            signed = await self._sign(withdrawal, transaction)
            if signed is not None:
                return withdrawal
            async with self.database.transaction() as session:
                current = await self._locked(session, withdrawal.withdrawal_id)
                failed = await move(
                    session,
                    current,
                    State.FAILED,
                    outcome=Outcome.SIGNING_REFUSED,
                    outcome_message="The withdrawal could not be signed.",
                    note="custody refused to sign",
                )
            return await self.lifecycle.settle(failed)
        sent = await self._broadcast(withdrawal, transaction)
        async with self.database.transaction() as session:
            current = await self._locked(session, withdrawal.withdrawal_id)
            if current.state is not State.SIGNING:
                return None
            await store.update_transaction(
                session, replace(transaction, status=TxStatus(sent.status or 1), broadcast_time_us=now_us())
            )
            return await move(
                session,
                current,
                State.BROADCAST,
                tx_hash=transaction.tx_hash,
                broadcast_time_us=now_us(),
                required_confirmations=sent.required_confirmations,
            )

    async def _follow(self, withdrawal: Withdrawal) -> Withdrawal | None:
        replacement = await self._unsent(withdrawal.withdrawal_id)
        if replacement is not None:
            return await self._send_replacement(withdrawal, replacement)
        found = (
            await self._gateway(
                "GetTransaction",
                gateway.GetTransactionRequest(chain=withdrawal.chain, tx_hash=withdrawal.tx_hash),
            )
        ).transaction
        status = TxStatus(found.status)
        fee = found.network_fee if found.HasField("network_fee") else None
        if status is TxStatus.CONFIRMED:
            return await self._confirm(withdrawal, found, fee)
        if status is TxStatus.FAILED:
            return await self._revert(withdrawal, found, fee)
        if status is TxStatus.REPLACED and found.replaced_by_tx_hash:
            return await self._switch(withdrawal, found.replaced_by_tx_hash.lower())
        async with self.database.transaction() as session:
            current = await self._locked(session, withdrawal.withdrawal_id)
            if current.confirmations != found.confirmations:
                await store.update_withdrawal(session, replace(current, confirmations=found.confirmations))
            await self._record_status(session, current, status)
        stuck_us = int(self.settings.stuck_timeout_s * 1_000_000)
        broadcast_us = withdrawal.broadcast_time_us or withdrawal.update_time_us
        if (
            status in REPLACEABLE
            and withdrawal.replacements < self.settings.replacements_max
            and now_us() - broadcast_us >= stuck_us * (withdrawal.replacements + 1)
        ):
            return await self.replace(withdrawal, "")
        return None

    async def _record_status(self, session: AsyncSession, withdrawal: Withdrawal, status: TxStatus) -> None:
        for row in await store.transactions_of(session, withdrawal.withdrawal_id):
            if row.tx_hash == withdrawal.tx_hash and row.status is not status:
                await store.update_transaction(session, replace(row, status=status))

    async def replace(self, withdrawal: Withdrawal, max_fee_per_gas: str) -> Withdrawal:
        """A replacement of the current transaction (same nonce, higher fee), built, approved and
        stored; signed and broadcast by the next steps."""
        seq = withdrawal.replacements + 1
        built = await self._gateway(
            "ReplaceTransaction",
            gateway.ReplaceTransactionRequest(
                request_id=domain.step_id(withdrawal.withdrawal_id, f"replace.{seq}"),
                chain=withdrawal.chain,
                tx_hash=withdrawal.tx_hash,
                mode=chain_resources.REPLACEMENT_MODE_SPEED_UP,
                max_fee_per_gas=max_fee_per_gas,
            ),
        )
        async with self.database.transaction() as session:
            current = await self._locked(session, withdrawal.withdrawal_id)
            rows = await store.transactions_of(session, current.withdrawal_id)
            if len(rows) <= seq:
                await store.insert_transaction(session, self._transaction(current, seq, built.transaction))
            return current

    async def _send_replacement(self, withdrawal: Withdrawal, transaction: Transaction) -> Withdrawal | None:
        if not transaction.signed_transaction:
            if await self._sign(withdrawal, transaction) is None:
                # Custody refused the replacement: the original stays the one followed.
                async with self.database.transaction() as session:
                    await session.execute(
                        store.transactions.delete().where(
                            store.transactions.c.withdrawal_id == transaction.withdrawal_id,
                            store.transactions.c.seq == transaction.seq,
                        )
                    )
                return None
            return withdrawal
        sent = await self._broadcast(withdrawal, transaction)
        async with self.database.transaction() as session:
            current = await self._locked(session, withdrawal.withdrawal_id)
            rows = await store.transactions_of(session, current.withdrawal_id)
            if rows[transaction.seq].status is not TxStatus.UNSPECIFIED:
                return None  # a concurrent step (the worker, or the operator's call) recorded it
            await store.update_transaction(
                session, replace(transaction, status=TxStatus(sent.status or 1), broadcast_time_us=now_us())
            )
            for row in await store.transactions_of(session, current.withdrawal_id):
                if row.tx_hash == current.tx_hash:
                    await store.update_transaction(session, replace(row, status=TxStatus.REPLACED))
            replaced = current.tx_hash
            moved = replace(
                current,
                tx_hash=transaction.tx_hash,
                replacements=current.replacements + 1,
                update_time_us=now_us(),
                version=current.version + 1,
            )
            await store.update_withdrawal(session, moved)
            await events.publish_replaced(
                session, await message_of(session, moved, staff=True), replaced, transaction.tx_hash
            )
            return moved

    async def _switch(self, withdrawal: Withdrawal, tx_hash: str) -> Withdrawal | None:
        """The chain gateway reports the followed transaction replaced by one of ours."""
        async with self.database.transaction() as session:
            current = await self._locked(session, withdrawal.withdrawal_id)
            ours = {row.tx_hash for row in await store.transactions_of(session, current.withdrawal_id)}
            if tx_hash not in ours or tx_hash == current.tx_hash:
                return None
            moved = replace(current, tx_hash=tx_hash, update_time_us=now_us(), version=current.version + 1)
            await store.update_withdrawal(session, moved)
            return moved

    async def _confirm(
        self, withdrawal: Withdrawal, found: chain_resources.Transaction, fee: money_pb2.Money | None
    ) -> Withdrawal:
        await self.lifecycle.ledger.post(withdrawal)
        if fee is not None:
            await self.lifecycle.ledger.gas(withdrawal, fee.asset, int(fee.amount))
        async with self.database.transaction() as session:
            current = await self._locked(session, withdrawal.withdrawal_id)
            await self._record_status(session, current, TxStatus.CONFIRMED)
            address = await store.address_by_id(session, current.address_id)
            if address is not None and not address.used:
                await store.update_address(session, replace(address, used=True))
            return await move(
                session,
                current,
                State.CONFIRMED,
                hold=domain.Hold.POSTED,
                confirmations=found.confirmations,
                required_confirmations=found.required_confirmations,
                network_fee_asset=fee.asset if fee is not None else "",
                network_fee=int(fee.amount) if fee is not None else 0,
            )

    async def _revert(
        self, withdrawal: Withdrawal, found: chain_resources.Transaction, fee: money_pb2.Money | None
    ) -> Withdrawal:
        # A reverted transaction still paid its gas.
        if fee is not None:
            await self.lifecycle.ledger.gas(withdrawal, fee.asset, int(fee.amount))
        async with self.database.transaction() as session:
            current = await self._locked(session, withdrawal.withdrawal_id)
            await self._record_status(session, current, TxStatus.FAILED)
            failed = await move(
                session,
                current,
                State.FAILED,
                outcome=Outcome.TRANSACTION_REVERTED,
                outcome_message="The transaction failed on chain; nothing was debited.",
                note=found.failure_message[:500],
                network_fee_asset=fee.asset if fee is not None else "",
                network_fee=int(fee.amount) if fee is not None else 0,
            )
        return await self.lifecycle.settle(failed)

    async def _gateway(self, method: str, request: object) -> Any:
        call = getattr(self.gateway, method)
        try:
            with as_service():
                return await call(request, timeout=CALL_TIMEOUT_S)
        except grpc.aio.AioRpcError as error:
            raise remote.translate(error, "chain-gateway") from None

    async def activate_addresses(self) -> int:
        """COOLING_DOWN -> ACTIVE for every entry whose cool-down ended, with its event."""
        time_us = now_us()
        async with self.database.transaction() as session:
            due = await store.cooled_down(session, time_us, WITHDRAWALS_PER_ROUND_MAX)
            for address in due:
                active = replace(address, state=AddressState.ACTIVE, version=address.version + 1)
                await store.update_address(session, active)
                await events.publish_address(
                    session,
                    convert.address_message(active, time_us),
                    active.version,
                    withdraw_events_pb2.WithdrawalAddressActivated,
                )
        return len(due)
