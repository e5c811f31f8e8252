"""The lifecycle steps shared by the servicer and the worker: every transition goes through
`move` (state machine check, version, history, event, in the caller's transaction), and the
ledger steps (hold, void, post) are idempotent by entry id, so any step can be repeated after a
crash. A ledger call is made outside the local transaction; its outcome is recorded after it."""

from __future__ import annotations

import json
import time
from dataclasses import replace
from typing import Any

from finmesh.withdraw.v1 import withdraw_resources_pb2 as resources
from sqlalchemy.ext.asyncio import AsyncSession

from svc.kit import errors
from svc.kit.db import Database
from svc.withdraw import convert, domain, events, rules, store
from svc.withdraw.config import WithdrawSettings
from svc.withdraw.domain import Actor, Hold, Outcome, Withdrawal
from svc.withdraw.peers import Kyc, Ledger
from svc.withdraw.states import VOIDING, State, check

SYSTEM = "withdraw"
DAY_S = 24 * 3600
GENERIC_REJECTION = "The withdrawal was not approved."


def now_us() -> int:
    return time.time_ns() // 1000


async def message_of(session: AsyncSession, withdrawal: Withdrawal, *, staff: bool) -> resources.Withdrawal:
    transactions = await store.transactions_of(session, withdrawal.withdrawal_id)
    if not staff:
        return convert.withdrawal_message(withdrawal, transactions=transactions, staff=False)
    return convert.withdrawal_message(
        withdrawal,
        transactions=transactions,
        decisions=await store.decisions_of(session, withdrawal.withdrawal_id),
        history=await store.history_of(session, withdrawal.withdrawal_id),
        staff=True,
    )


async def move(
    session: AsyncSession,
    withdrawal: Withdrawal,
    target: State,
    *,
    actor: Actor = Actor.SYSTEM,
    actor_id: str = SYSTEM,
    note: str = "",
    **changes: Any,
) -> Withdrawal:
    """`withdrawal` (locked by the caller) moved to `target`, stored, with its history and event."""
    check(withdrawal.state, target, withdrawal.withdrawal_id)
    time_us = now_us()
    moved = replace(
        withdrawal, state=target, update_time_us=time_us, version=withdrawal.version + 1, **changes
    )
    if target in VOIDING or target is State.CONFIRMED:
        moved.complete_time_us = time_us
    if target is State.APPROVED:
        moved.approve_time_us = time_us
    await store.update_withdrawal(session, moved)
    await store.append_history(
        session, moved.withdrawal_id, withdrawal.state, target, actor, actor_id or SYSTEM, note, time_us
    )
    await events.publish_transition(
        session, await message_of(session, moved, staff=True), withdrawal.state, target
    )
    return moved


class Lifecycle:
    """Hold, risk, approval outcome and settlement of withdrawals."""

    def __init__(self, database: Database, settings: WithdrawSettings, ledger: Ledger, kyc: Kyc) -> None:
        self.database = database
        self.settings = settings
        self.ledger = ledger
        self.kyc = kyc

    async def _locked(self, session: AsyncSession, withdrawal_id: str) -> Withdrawal:
        withdrawal = await store.withdrawal_by_id(session, withdrawal_id, lock=True)
        assert withdrawal is not None, withdrawal_id
        return withdrawal

    async def place_hold(self, withdrawal: Withdrawal) -> Withdrawal:
        """REQUESTED -> HELD once the ledger holds amount plus fee; -> FAILED (and the refusal
        raised) if the ledger refuses: nothing is held then."""
        if withdrawal.state is not State.REQUESTED:
            return withdrawal
        try:
            await self.ledger.hold(withdrawal)
        except errors.DomainError as refusal:
            if refusal.reason not in ("INSUFFICIENT_FUNDS", "FROZEN", "NOT_FOUND"):
                raise
            async with self.database.transaction() as session:
                current = await self._locked(session, withdrawal.withdrawal_id)
                if current.state is State.REQUESTED:
                    await move(
                        session,
                        current,
                        State.FAILED,
                        outcome=Outcome.HOLD_REFUSED,
                        outcome_message="The amount and fee could not be held in your account.",
                        note=refusal.message[:500],
                    )
            raise hold_refusal(refusal, withdrawal) from None
        async with self.database.transaction() as session:
            current = await self._locked(session, withdrawal.withdrawal_id)
            if current.state is State.REQUESTED:
                current = await move(session, current, State.HELD, hold=Hold.PENDING)
            return current

    async def assess(self, withdrawal: Withdrawal) -> Withdrawal:
        """HELD -> RISK_REVIEW -> APPROVED | AWAITING_APPROVAL | REJECTED (built-in rules)."""
        if withdrawal.state not in (State.HELD, State.RISK_REVIEW):
            return withdrawal
        policy = self.settings.withdrawal_assets[withdrawal.asset]
        sanctioned = await self.kyc.sanctioned(
            withdrawal.user_id,
            withdrawal.chain,
            withdrawal.destination,
            domain.step_id(withdrawal.withdrawal_id, "screen"),
        )
        async with self.database.transaction() as session:
            current = await self._locked(session, withdrawal.withdrawal_id)
            if current.state is State.HELD:
                current = await move(session, current, State.RISK_REVIEW)
            if current.state is not State.RISK_REVIEW:
                return current
            address = await store.address_by_id(session, current.address_id)
            time_us = now_us()
            facts = rules.Facts(
                amount=current.amount,
                daily_total=await store.used_since(
                    session, current.user_id, current.asset, time_us - domain.DAY_US
                )
                - current.amount,
                recent_count=await store.count_since(
                    session,
                    current.user_id,
                    time_us - self.settings.velocity_window_s * 1_000_000,
                    current.withdrawal_id,
                ),
                first_to_address=address is None or not address.used,
                sanctioned=sanctioned,
            )
            thresholds = rules.Thresholds(
                review_amount=policy.review_amount,
                daily_review_amount=policy.daily_review_amount,
                new_address_review_amount=policy.new_address_review_amount,
                velocity_max=self.settings.velocity_max,
            )
            assessment = rules.assess(facts, thresholds)
            risk: dict[str, Any] = {
                "risk_decision": int(assessment.decision),
                "risk_reasons": json.dumps([[reason.code, reason.message] for reason in assessment.reasons]),
                "risk_time_us": time_us,
            }
            codes = ",".join(reason.code for reason in assessment.reasons)
            if assessment.decision is rules.Decision.DENY:
                current = await move(
                    session,
                    current,
                    State.REJECTED,
                    outcome=Outcome.RISK_DENIED,
                    outcome_message=GENERIC_REJECTION,
                    note=f"risk DENY: {codes}",
                    **risk,
                )
            elif rules.needs_approvers(assessment, current.amount, policy.auto_approval_threshold):
                current = await move(
                    session,
                    current,
                    State.AWAITING_APPROVAL,
                    note=f"risk {assessment.decision.name}: {codes}",
                    required_approvals=self.settings.required_approvals,
                    approval_expire_time_us=time_us + self.settings.approval_window_s * 1_000_000,
                    **risk,
                )
            else:
                current = await move(
                    session, current, State.APPROVED, note="auto-approved", auto_approved=True, **risk
                )
        return await self.settle(current)

    async def settle(self, withdrawal: Withdrawal) -> Withdrawal:
        """Voids the hold of a withdrawal that ended unpaid (REJECTED, CANCELLED, FAILED)."""
        if withdrawal.state not in VOIDING or withdrawal.hold is not Hold.PENDING:
            return withdrawal
        await self.ledger.void(withdrawal, f"withdrawal {withdrawal.state.name.lower()}")
        async with self.database.transaction() as session:
            current = await self._locked(session, withdrawal.withdrawal_id)
            if current.hold is Hold.PENDING:
                current = replace(current, hold=Hold.VOIDED, update_time_us=now_us())
                await store.update_withdrawal(session, current)
            return current

    async def expire_approvals(self, withdrawal: Withdrawal) -> Withdrawal:
        """AWAITING_APPROVAL past its window -> REJECTED (APPROVAL_EXPIRED)."""
        async with self.database.transaction() as session:
            current = await self._locked(session, withdrawal.withdrawal_id)
            expire = current.approval_expire_time_us
            if current.state is not State.AWAITING_APPROVAL or expire is None or expire > now_us():
                return current
            current = await move(
                session,
                current,
                State.REJECTED,
                outcome=Outcome.APPROVAL_EXPIRED,
                outcome_message=GENERIC_REJECTION,
                note="approval window expired",
            )
        return await self.settle(current)


def hold_refusal(refusal: errors.DomainError, withdrawal: Withdrawal) -> errors.DomainError:
    """The error CreateWithdrawal answers when the hold was refused."""
    metadata = {
        "withdrawal_id": withdrawal.withdrawal_id,
        "asset": withdrawal.asset,
        "total_debit": str(withdrawal.total),
    }
    if refusal.reason == "FROZEN":
        return errors.Frozen("the account is frozen; nothing was held", metadata=metadata)
    return errors.InsufficientFunds(
        "the available balance does not cover amount plus fee; nothing was held", metadata=metadata
    )
